from django.urls import path

from . import views

app_name = "billing"

urlpatterns = [
    path("t/<slug:team_slug>/usage/", views.team_usage, name="team_usage"),
    path("t/<slug:team_slug>/keys/<int:key_id>/usage/", views.key_usage, name="key_usage"),
]
