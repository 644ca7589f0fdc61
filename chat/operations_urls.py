from django.urls import path

from . import operations

urlpatterns = [
    path("readyz", operations.readyz, name="readyz"),
    path("metrics", operations.metrics, name="metrics"),
]
