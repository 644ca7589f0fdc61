from django.urls import path

from . import completions_api, openai_api, responses_api

urlpatterns = [
    path("chat/completions", openai_api.chat_completions, name="openai-chat-completions"),
    path("completions", completions_api.completions, name="openai-completions"),
    path("responses", responses_api.responses_create, name="openai-responses"),
    path(
        "responses/<str:response_id>",
        responses_api.ResponseDetailApi.as_view(),
        name="openai-response",
    ),
    path("models", openai_api.ModelListApi.as_view(), name="openai-models"),
    path("models/<str:model_id>", openai_api.ModelDetailApi.as_view(), name="openai-model"),
]
