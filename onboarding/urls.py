from django.urls import path

from onboarding import views

urlpatterns = [
    path("", views.home, name="home"),
]
