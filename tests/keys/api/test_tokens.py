"""The API token services and how the API authenticates with them."""

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from rest_framework.test import APIClient

from keys import services
from keys.models import ApiToken, digest_key
from keys.selectors import api_token_list

from ...factories import UserFactory

ME = "/api/v1/me/"


def test_create_returns_the_plaintext_once_and_stores_only_its_digest(member):
    issued = services.api_token_create(user=member, name=" ci-bot ", actor=member)

    token = ApiToken.objects.get()
    assert issued.plaintext.startswith("hcat_")
    assert len(issued.plaintext) == len("hcat_") + 43  # 32 random bytes, URL-safe base64
    assert token.digest == digest_key(issued.plaintext)
    assert issued.plaintext.startswith(token.prefix)
    assert token.prefix == issued.plaintext[:11]
    assert token.name == "ci-bot"
    assert token.user == member
    assert issued.plaintext not in repr(issued)
    assert issued.plaintext not in {getattr(token, f.attname) for f in ApiToken._meta.fields}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "Name is required."),
        ("   ", "Name is required."),
        ("x" * 101, "Name can be at most 100 characters."),
        ("bad\x00name", "Null characters are not allowed."),
    ],
)
def test_create_refuses_a_bad_name_and_writes_nothing(member, name, message):
    with pytest.raises(ValidationError) as error:
        services.api_token_create(user=member, name=name, actor=member)

    assert error.value.message_dict == {"name": [message]}
    assert not ApiToken.objects.exists()


def test_revoke_keeps_the_row_and_the_first_revocation_time(member):
    token = services.api_token_create(user=member, name="ci", actor=member).token
    services.api_token_revoke(token=token, actor=None)
    first = ApiToken.objects.get().revoked_at

    services.api_token_revoke(token=ApiToken.objects.get(), actor=None)

    assert first is not None
    assert ApiToken.objects.get().revoked_at == first
    assert not ApiToken.objects.active().exists()


@pytest.mark.parametrize(
    ("actor_name", "expected"),
    [("self", "member"), ("staff", "alice"), ("system", None)],
)
def test_create_records_who_made_the_token(member, actor_name, expected):
    actor = {
        "self": member,
        "staff": UserFactory(username="alice", is_staff=True),
        "system": None,
    }[actor_name]

    issued = services.api_token_create(user=member, name="ci", actor=actor)

    token = ApiToken.objects.get()
    assert token == issued.token
    assert token.user == member
    stored_creator = None if token.created_by is None else token.created_by.username
    assert stored_creator == expected
    assert issued.token.created_by_id == token.created_by_id


def test_deleting_the_creator_keeps_the_token_working_with_created_by_empty(member):
    alice = UserFactory(username="alice", is_staff=True)
    issued = services.api_token_create(user=member, name="ci", actor=alice)
    digest = ApiToken.objects.get().digest

    alice.delete()

    token = ApiToken.objects.get()
    assert (token.created_by_id, token.user, token.digest, token.revoked_at) == (
        None,
        member,
        digest,
        None,
    )
    response = _client(f"Token {issued.plaintext}").get(ME)
    assert response.status_code == 200
    assert response.json()["username"] == "member"


def test_token_list_shows_only_the_actors_tokens(member, lead):
    own = services.api_token_create(user=member, name="mine", actor=member).token
    services.api_token_create(user=lead, name="theirs", actor=lead)

    assert list(api_token_list(actor=member)) == [own]


def _client(header: str | None) -> APIClient:
    client = APIClient()
    if header is not None:
        client.credentials(HTTP_AUTHORIZATION=header)
    return client


def test_a_token_authenticates_as_its_user_and_marks_its_use(member):
    issued = services.api_token_create(user=member, name="ci", actor=member)

    response = _client(f"Token {issued.plaintext}").get(ME)

    assert response.status_code == 200
    assert response.json()["username"] == "member"
    assert ApiToken.objects.get().last_used_at is not None


def test_last_use_is_written_at_most_once_a_minute(member):
    issued = services.api_token_create(user=member, name="ci", actor=member)
    client = _client(f"Token {issued.plaintext}")
    client.get(ME)
    first = ApiToken.objects.get().last_used_at

    client.get(ME)

    assert ApiToken.objects.get().last_used_at == first


def test_no_credentials_is_401_with_a_token_challenge(db):
    response = _client(None).get(ME)

    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication credentials were not provided."}
    assert response["WWW-Authenticate"] == "Token"


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda token: token[:-1], id="cut-short"),
        pytest.param(lambda token: "hcat_" + token[5:].upper(), id="upper-cased"),
        pytest.param(lambda token: token + "x", id="one-too-many"),
        pytest.param(lambda token: "hcat_", id="prefix-only"),
    ],
)
def test_a_damaged_token_is_401(member, damage):
    issued = services.api_token_create(user=member, name="ci", actor=member)

    response = _client(f"Token {damage(issued.plaintext)}").get(ME)

    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid or revoked API token."}


def test_a_token_not_shaped_like_one_is_refused_without_a_look_up(
    member, django_assert_num_queries
):
    issued = services.api_token_create(user=member, name="ci", actor=member)
    client = _client(f"Token {issued.plaintext[:-1]}")

    with django_assert_num_queries(0):
        response = client.get(ME)

    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid or revoked API token."}


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        ("Token", "Send the token as “Authorization: Token hcat_…”."),
        ("Token a b", "Send the token as “Authorization: Token hcat_…”."),
        ("Token héllo", "Invalid or revoked API token."),
    ],
)
def test_a_malformed_header_is_401(db, header, detail):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header.encode().decode("latin-1"))

    response = client.get(ME)

    assert response.status_code == 401
    assert response.json() == {"detail": detail}


def test_a_revoked_token_is_401(member):
    issued = services.api_token_create(user=member, name="ci", actor=member)
    services.api_token_revoke(token=issued.token, actor=None)

    response = _client(f"Token {issued.plaintext}").get(ME)

    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid or revoked API token."}


def test_the_token_of_a_deactivated_user_is_401(db):
    user = UserFactory(username="gone")
    issued = services.api_token_create(user=user, name="ci", actor=user)
    user.is_active = False
    user.save()

    assert _client(f"Token {issued.plaintext}").get(ME).status_code == 401


@pytest.mark.parametrize("scheme", ["Token", "Bearer"])
def test_a_relay_key_is_never_accepted(issued, scheme):
    response = _client(f"{scheme} {issued.plaintext}").get(ME)

    assert response.status_code == 401
    if scheme == "Token":
        assert response.json() == {
            "detail": "This is not an API token (they start with “hcat_”); "
            "relay keys do not work here."
        }


def test_a_relay_key_in_x_api_key_is_ignored(issued):
    response = APIClient().get(ME, HTTP_X_API_KEY=issued.plaintext)

    assert response.status_code == 401


def test_a_session_works_and_needs_the_csrf_token_for_writes(member, group, team):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(member)
    body = {"team": "acme", "name": "from-browser", "group": group.pk}

    assert client.get(ME).status_code == 200
    refused = client.post("/api/v1/keys/", body, format="json")
    assert refused.status_code == 403
    assert refused.json()["detail"].startswith("CSRF Failed")
    assert not team.api_keys.exists()

    client.get("/api/docs/")  # any page that sets the CSRF cookie
    csrf = client.cookies["csrftoken"].value
    accepted = client.post("/api/v1/keys/", body, format="json", HTTP_X_CSRFTOKEN=csrf)
    assert accepted.status_code == 201


def test_a_token_needs_no_csrf_token(member, group, api):
    client = api(member)
    client.handler.enforce_csrf_checks = True

    response = client.post(
        "/api/v1/keys/", {"team": "acme", "name": "ci", "group": group.pk}, format="json"
    )

    assert response.status_code == 201


def test_the_rate_limit_counts_per_token(member, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"api_token": "2/min"},
    }
    first = _client(
        f"Token {services.api_token_create(user=member, name='a', actor=member).plaintext}"
    )
    second = _client(
        f"Token {services.api_token_create(user=member, name='b', actor=member).plaintext}"
    )

    statuses = [first.get(ME).status_code for _ in range(3)]
    throttled = first.get(ME)

    assert statuses == [200, 200, 429]
    assert throttled.status_code == 429
    assert int(throttled["Retry-After"]) > 0
    assert throttled.json()["detail"].startswith("Request was throttled.")
    assert second.get(ME).status_code == 200


def test_tokens_are_not_in_the_logs(member, caplog):
    issued = services.api_token_create(user=member, name="ci", actor=member)
    with caplog.at_level("DEBUG"):
        _client(f"Token {issued.plaintext}").get(ME)
        _client(f"Token {issued.plaintext}x").get(ME)

    assert issued.plaintext not in caplog.text


def test_revoked_at_is_set_to_now(member):
    token = services.api_token_create(user=member, name="ci", actor=member).token
    before = timezone.now()

    services.api_token_revoke(token=token, actor=None)

    assert before <= ApiToken.objects.get().revoked_at <= timezone.now()


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/me/",
        "/api/v1/keys/",
        "/api/v1/keys/{key}/",
        "/api/v1/keys/{key}/events/",
        "/api/v1/groups/",
        "/api/v1/teams/",
        "/api/v1/usage/",
        "/api/v1/usage/daily/",
    ],
)
def test_the_browsable_api_renders_for_a_signed_in_user(issued, member, path):
    client = APIClient()
    client.force_login(member)

    response = client.get(path.format(key=issued.key.pk), HTTP_ACCEPT="text/html")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert issued.plaintext not in response.content.decode()


def test_the_browsable_api_renders_the_members_for_a_lead(lead):
    """The members list is for leads (members get 404, tests/keys/api/test_teams.py)."""
    client = APIClient()
    client.force_login(lead)

    response = client.get("/api/v1/teams/acme/members/", HTTP_ACCEPT="text/html")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert "lead@example.com" in response.content.decode()
