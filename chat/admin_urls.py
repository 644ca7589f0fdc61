from django.contrib import admin
from django.urls import path

from .admin_workers import workers_view

urlpatterns = [
    path("workers/", admin.site.admin_view(workers_view), name="admin-workers"),
]
