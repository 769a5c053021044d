"""The REST API's notification endpoints, under /api/v1/teams/<slug>/..."""

from django.urls import path  # noqa: F401

urlpatterns: list = []
