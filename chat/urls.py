from django.urls import path

from . import api, continue_api, search_api, share_api, transfer_api

urlpatterns = [
    path("sessions", api.SessionListCreateApi.as_view(), name="api-sessions"),
    path("sessions/<str:session_id>", api.SessionDetailApi.as_view(), name="api-session-detail"),
    path(
        "sessions/<str:session_id>/messages",
        api.SessionMessagesApi.as_view(),
        name="api-session-messages",
    ),
    path(
        "sessions/<str:session_id>/messages/<str:message_id>/continue",
        continue_api.MessageContinueApi.as_view(),
        name="api-message-continue",
    ),
    path(
        "sessions/<str:session_id>/regenerate",
        api.SessionRegenerateApi.as_view(),
        name="api-session-regenerate",
    ),
    path("search", search_api.SearchApi.as_view(), name="api-search"),
    path(
        "sessions/<str:session_id>/export",
        transfer_api.SessionExportApi.as_view(),
        name="api-session-export",
    ),
    path("export", transfer_api.ExportApi.as_view(), name="api-export"),
    path("import", transfer_api.ImportApi.as_view(), name="api-import"),
    path(
        "sessions/<str:session_id>/shares",
        share_api.SessionSharesApi.as_view(),
        name="api-session-shares",
    ),
    path("shares/<str:share_id>", share_api.ShareDetailApi.as_view(), name="api-share-detail"),
    path("jobs/<str:job_id>", api.JobDetailApi.as_view(), name="api-job-detail"),
    path("jobs/<str:job_id>/cancel", api.JobCancelApi.as_view(), name="api-job-cancel"),
    path("jobs/<str:job_id>/events", api.job_events_view, name="api-job-events"),
]
