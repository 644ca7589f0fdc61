"""URLs of the browser UI (pages, sign-in, and the UI's two JSON endpoints); the
organisation's pages are in tenants/ui_urls.py."""

from django.contrib.auth import views as auth_views
from django.urls import path

from . import share_ui, ui

urlpatterns = [
    path("", ui.home, name="ui-home"),
    path("login/", ui.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("chat/", ui.chat_page, name="ui-chat"),
    path("chat/<uuid:session_id>/", ui.chat_page, name="ui-chat-session"),
    path("share/<str:token>/", share_ui.share_page, name="ui-share"),
    path("share/<str:token>/continue", share_ui.share_continue, name="ui-share-continue"),
    path("ui/jobs/<str:job_id>/state", ui.JobStateApi.as_view(), name="ui-job-state"),
]
