"""The live progress endpoints (onboarding/live.py), included at the site root."""

from django.urls import path

from onboarding import live

urlpatterns = [
    path("progress/stream/", live.progress_stream, name="progress_stream"),
    path("progress/fragment/", live.progress_fragment, name="progress_fragment"),
    path("progress/status.json", live.progress_status, name="progress_status"),
]
