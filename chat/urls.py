from django.urls import path

from . import api

urlpatterns = [
    path("sessions", api.SessionListCreateApi.as_view(), name="api-sessions"),
    path("sessions/<str:session_id>", api.SessionDetailApi.as_view(), name="api-session-detail"),
    path(
        "sessions/<str:session_id>/messages",
        api.SessionMessagesApi.as_view(),
        name="api-session-messages",
    ),
    path("jobs/<str:job_id>", api.JobDetailApi.as_view(), name="api-job-detail"),
]
