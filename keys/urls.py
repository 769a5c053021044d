from django.contrib.auth import views as auth_views
from django.urls import include, path

from . import views

app_name = "keys"

# The pages of one key, below /t/<team>/keys/<id>/.
key_patterns = [
    path("", views.key_detail, name="detail"),
    path("edit/", views.key_edit, name="edit"),
    path("rotate/", views.key_rotate, name="rotate"),
    path("issued/<str:once>/", views.key_issued, name="issued"),
    path("delete/", views.key_delete, name="delete"),
]

# The pages of one team, below /t/<team>/.
team_patterns = [
    path("keys/", views.key_list, name="list"),
    path("keys/new/", views.key_create, name="create"),
    path("keys/<int:key_id>/", include(key_patterns)),
    path("team/", views.team_detail, name="team"),
    path("team/key-settings/", views.team_key_settings, name="team_key_settings"),
    path("team/invitations/new/", views.invitation_create, name="invitation_create"),
    path(
        "team/invitations/<int:invitation_id>/revoke/",
        views.invitation_revoke,
        name="invitation_revoke",
    ),
    path("team/members/<int:membership_id>/role/", views.member_role, name="member_role"),
    path("team/members/<int:membership_id>/cap/", views.member_cap, name="member_cap"),
    path("team/members/<int:membership_id>/remove/", views.member_remove, name="member_remove"),
]

urlpatterns = [
    path("accounts/login/", views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/tokens/", views.token_list, name="tokens"),
    path("accounts/language/", views.language_set, name="language"),
    path("accounts/tokens/new/", views.token_create, name="token_create"),
    path(
        "accounts/tokens/<int:token_id>/issued/<str:once>/", views.token_issued, name="token_issued"
    ),
    path("accounts/tokens/<int:token_id>/revoke/", views.token_revoke, name="token_revoke"),
    path("invitations/<str:token>/", views.invitation_accept, name="invitation"),
    path("", views.home, name="home"),
    path("t/<slug:team_slug>/", include(team_patterns)),
]
