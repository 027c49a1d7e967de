from django.urls import include, path

from onboarding import views

urlpatterns = [
    path("", views.home, name="home"),
    # The live progress stream, the polling fragment and the JSON status (onboarding/live.py).
    path("", include("onboarding.urls_live")),
]
