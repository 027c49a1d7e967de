from django.contrib.auth import views as auth_views
from django.urls import include, path

from onboarding import views

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/signup/", views.signup, name="signup"),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("github/", views.connect_github, name="connect_github"),
    path("github/token/", views.connect_token, name="connect_token"),
    path("github/demo/", views.connect_demo, name="connect_demo"),
    path("github/oauth/start/", views.oauth_start, name="oauth_start"),
    path("github/oauth/callback/", views.oauth_callback, name="oauth_callback"),
    path("repositories/", views.select_repositories, name="select_repositories"),
    path("repositories/list/", views.repository_list, name="repository_list"),
    path("progress/", views.progress, name="progress"),
    path("progress/retry/", views.retry_pipeline, name="retry_pipeline"),
    path("progress/cancel/", views.cancel_pipeline, name="cancel_pipeline"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("team/", views.team_page, name="team"),
    path("team/invitations/", views.create_invitation, name="create_invitation"),
    path("team/members/<int:membership_id>/role/", views.change_role, name="change_role"),
    path("invite/<str:token>/", views.accept_invitation, name="accept_invitation"),
    # The live progress stream, the polling fragment and the JSON status (onboarding/live.py).
    path("", include("onboarding.urls_live")),
]
