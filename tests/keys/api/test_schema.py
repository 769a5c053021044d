"""The OpenAPI schema: valid without warnings, every body typed, docs served without a CDN."""

import re

import pytest
import yaml
from django.core.management import call_command
from django.urls import reverse
from rest_framework.test import APIClient


@pytest.fixture(scope="module")
def schema(tmp_path_factory) -> dict:
    """What CI generates: `spectacular --validate --fail-on-warn` fails on any warning."""
    path = tmp_path_factory.mktemp("schema") / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))
    return yaml.safe_load(path.read_text())


def _operations(schema: dict):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            yield f"{method.upper()} {path}", operation


def test_the_schema_covers_every_resource_of_the_issue(schema):
    assert set(schema["paths"]) == {
        "/api/v1/keys/",
        "/api/v1/keys/{id}/",
        "/api/v1/keys/{id}/rotate/",
        "/api/v1/keys/{id}/enable/",
        "/api/v1/keys/{id}/disable/",
        "/api/v1/keys/{id}/events/",
        "/api/v1/groups/",
        "/api/v1/groups/{id}/",
        "/api/v1/teams/",
        "/api/v1/teams/{slug}/",
        "/api/v1/teams/{team_slug}/members/",
        "/api/v1/teams/{team_slug}/members/{username}/",
        "/api/v1/teams/{team_slug}/invitations/",
        "/api/v1/teams/{team_slug}/invitations/{id}/",
        "/api/v1/teams/{team_slug}/events/",
        "/api/v1/teams/{team_slug}/key-settings/",
        "/api/v1/teams/{team_slug}/notifications/",
        "/api/v1/teams/{team_slug}/notifications/me/",
        "/api/v1/invitations/accept/",
        "/api/v1/usage/",
        "/api/v1/usage/daily/",
        "/api/v1/usage/refusals/",
        "/api/v1/usage/export.csv",
        "/api/v1/usage/daily/export.csv",
        "/api/v1/me/",
        "/api/v1/teams/{team_slug}/webhooks/",
        "/api/v1/teams/{team_slug}/webhooks/{id}/",
        "/api/v1/teams/{team_slug}/webhooks/{id}/test/",
        "/api/v1/teams/{team_slug}/webhooks/{id}/deliveries/",
        "/api/v1/teams/{team_slug}/webhooks/{id}/deliveries/{delivery_uuid}/redeliver/",
    }


def _untyped(schema_object: dict | None) -> bool:
    return not schema_object or schema_object == {"type": "object"}


def test_every_request_and_response_body_is_typed(schema):
    for name, operation in _operations(schema):
        bodies = [operation.get("requestBody", {}).get("content", {})]
        bodies += [response.get("content", {}) for response in operation["responses"].values()]
        for content in bodies:
            for media in content.values():
                assert not _untyped(media.get("schema")), name


def test_every_operation_needs_a_token_or_a_session(schema):
    for name, operation in _operations(schema):
        assert operation["security"] == [{"tokenAuth": []}, {"cookieAuth": []}], name
        assert {"401", "403", "429", "503"} <= set(operation["responses"]), name
    token = schema["components"]["securitySchemes"]["tokenAuth"]
    assert token == {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "A personal access token from the portal: `Token hcat_…`.",
    }


def test_every_paged_operation_declares_its_page_bounds_and_400(schema):
    paged = [
        (name, operation)
        for name, operation in _operations(schema)
        if any(param["name"] == "page" for param in operation.get("parameters", []))
    ]

    # The eight lists, the team's pending invitations and the team's audit trail; a team's
    # webhooks and a webhook's deliveries.
    assert len(paged) == 12
    for name, operation in paged:
        params = {param["name"]: param["schema"] for param in operation["parameters"]}
        assert params["page"] == {"type": "integer", "minimum": 1, "default": 1}, name
        assert params["page_size"] == {
            "type": "integer",
            "minimum": 1,
            "maximum": 200,
            "default": 50,
        }, name
        assert "400" in operation["responses"], name


def test_request_bodies_declare_what_the_services_refuse(schema):
    components = schema["components"]["schemas"]
    key, group = components["KeyCreateRequest"], components["GroupCreateRequest"]

    assert key["properties"]["name"] == {
        "type": "string",
        "minLength": 1,
        "maxLength": 100,
        "pattern": r"^[^\u0000]*[^\s\u0000][^\u0000]*$",
    }
    assert group["properties"]["name"]["minLength"] == 1
    assert "nullable" not in key["properties"]["group"]
    assert "nullable" not in components["PatchedKeyUpdateRequest"]["properties"]["group"]
    for name in ("team", "owner"):
        assert key["properties"][name]["minLength"] == 1


def test_the_key_budgets_are_readable_and_writable_under_the_models_names(schema):
    components = schema["components"]["schemas"]
    for request in ("KeyCreateRequest", "PatchedKeyUpdateRequest"):
        properties = components[request]["properties"]
        for window in ("daily_limit_usd", "weekly_limit_usd", "monthly_limit_usd"):
            assert properties[window]["oneOf"] == properties["quota_limit_usd"]["oneOf"]
        concurrency = properties["max_concurrency"]
        assert (concurrency["type"], concurrency["minimum"], concurrency["maximum"]) == (
            "integer",
            0,
            10_000,
        )
    key = components["Key"]["properties"]
    for window in ("daily_limit_usd", "weekly_limit_usd", "monthly_limit_usd"):
        assert (key[window]["type"], key[window]["format"]) == ("string", "decimal")
    assert key["max_concurrency"]["type"] == "integer"


@pytest.mark.parametrize(
    "operation",
    [
        "POST /api/v1/groups/",
        "PATCH /api/v1/groups/{id}/",
        "PATCH /api/v1/teams/{team_slug}/members/{username}/",
        "DELETE /api/v1/teams/{team_slug}/members/{username}/",
    ],
)
def test_refusals_for_the_state_of_the_data_are_documented_as_409(schema, operation):
    responses = dict(_operations(schema))[operation]["responses"]

    assert responses["409"]["content"]["application/json"]["schema"]["required"] == ["detail"]


def test_plaintext_keys_are_only_in_create_and_rotate(schema):
    with_plaintext = {
        name
        for name, operation in _operations(schema)
        for response in operation["responses"].values()
        for media in response.get("content", {}).values()
        if media["schema"].get("$ref") == "#/components/schemas/IssuedKey"
    }
    key = schema["components"]["schemas"]["Key"]["properties"]

    assert with_plaintext == {"POST /api/v1/keys/", "POST /api/v1/keys/{id}/rotate/"}
    assert "key" not in key
    assert "digest" not in key


@pytest.mark.parametrize("how", ["token", "session"])
def test_the_schema_is_served_to_signed_in_callers(api, member, how):
    client = api(member) if how == "token" else APIClient()
    if how == "session":
        client.force_login(member)

    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert response.status_code == 200
    assert response.json()["info"]["title"] == "HCAI Keys API"


@pytest.mark.parametrize(
    ("accept", "token", "detail"),
    [
        ("application/vnd.oai.openapi", None, "Authentication credentials were not provided."),
        ("application/vnd.oai.openapi+json", None, "Authentication credentials were not provided."),
        ("*/*", "hcat_not-a-real-token", "Invalid or revoked API token."),
    ],
)
def test_the_schema_is_refused_to_anyone_else_in_json(db, accept, token, detail):
    client = APIClient()
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")

    response = client.get("/api/schema/", HTTP_ACCEPT=accept)

    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert response["WWW-Authenticate"] == "Token"
    assert response.json() == {"detail": detail}
    assert "paths" not in response.content.decode()


def test_the_docs_send_anyone_else_to_sign_in(db):
    response = APIClient().get("/api/docs/")

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('keys:login')}?next=/api/docs/"


def test_the_docs_load_their_assets_from_our_static_files(member):
    client = APIClient()
    client.force_login(member)
    response = client.get("/api/docs/")

    html = response.content.decode()
    assert response.status_code == 200
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    # Every asset the page loads is ours: no src or href leaves the site. (A plain "cdn"
    # search would trip over the page's random CSRF token now and then.)
    assets = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert assets
    assert [asset for asset in assets if not asset.startswith("/")] == []
    assert "https://" not in html
    assert "http://" not in html


def test_an_unknown_api_path_is_a_json_404(db):
    for method in ("get", "post", "delete"):
        response = getattr(APIClient(), method)("/api/v1/nothing-here/")

        assert response.status_code == 404
        assert response.json() == {"detail": "Not found."}


@pytest.mark.parametrize(
    ("path", "signed_in"),
    [
        ("/api/v1/me/", True),
        ("/api/v1/keys/", True),
        ("/api/v1/usage/", True),
        ("/api/schema/", True),
        ("/api/v1/me/", False),
        ("/api/v1/nothing-here/", False),
    ],
)
def test_no_api_answer_may_be_stored(api, member, path, signed_in):
    """Not only create and rotate, which carry a key: every answer is the caller's alone."""
    response = api(member if signed_in else None).get(path)

    assert response["Cache-Control"] == "max-age=0, no-cache, no-store, must-revalidate, private"
