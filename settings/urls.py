from django.contrib import admin
from django.urls import include, path

from pipeline import ops_views

urlpatterns = [
    # The live operations page sits inside the admin's URL space (staff only, see the view).
    path("admin/operations/", ops_views.operations, name="operations"),
    path("admin/operations/stream/", ops_views.operations_stream, name="operations_stream"),
    path("admin/", admin.site.urls),
    path("", include("onboarding.urls")),
]
