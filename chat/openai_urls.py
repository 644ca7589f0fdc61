from django.urls import path

from . import openai_api

urlpatterns = [
    path("chat/completions", openai_api.chat_completions, name="openai-chat-completions"),
    path("models", openai_api.ModelListApi.as_view(), name="openai-models"),
    path("models/<str:model_id>", openai_api.ModelDetailApi.as_view(), name="openai-model"),
]
