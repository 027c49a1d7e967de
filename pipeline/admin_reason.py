"""Admin actions that ask for a reason first: an intermediate page (Django's own pattern for
confirmations) posts the same action back with ``reason``; the action then runs."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse


def ask_reason(
    model_admin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet, title: str
) -> str | TemplateResponse:
    """The reason given, or the page asking for it (again, if it was left empty)."""
    reason = (request.POST.get("reason") or "").strip()
    if request.POST.get("confirm") == "yes" and reason:
        return reason
    context = {
        **model_admin.admin_site.each_context(request),
        "title": title,
        "objects": list(queryset[:100]),
        "count": len(queryset[:101]),
        "action": request.POST.get("action", ""),
        "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
        "select_across": request.POST.get("select_across", "0"),
        "missing": request.POST.get("confirm") == "yes",
        "opts": model_admin.model._meta,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/pipeline/reason.html", context)
