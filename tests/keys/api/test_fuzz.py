"""Schemathesis against a live server with a token, over every operation of the schema: no
5xx, every answer (status, content type, headers, body) as the schema says, and the schema and
the code agree on what a request may be: what the schema forbids is refused (an empty `team=`,
`page_size=null`), what it allows is accepted, and methods it does not list get a 405.

Bounded for CI: a fixed seed, at most 10 examples per operation and phase, one worker. Path
parameters are real ids and names most of the time, so the calls reach past the 404s into the
services.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from keys import services
from keys.models import Membership
from notify import services as notify_services

from ...factories import GroupFactory, MembershipFactory, UserFactory, grant, make_key

SCHEMATHESIS = Path(sys.executable).with_name("st")
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "positive_data_acceptance",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
]

# Bodies whose validity hangs on the data, which no schema can state: a team, group or user
# that exists, a group the team may use, an expiry still in the future, an IP range without
# host bits. A 400 there is the server doing its job; everything else about these operations,
# and every other operation, must be accepted when the schema allows it.
DATA_DEPENDENT_BODIES = [
    ("POST", r"^/api/v1/keys/$"),
    ("PATCH", r"^/api/v1/keys/\\{id\\}/$"),
    ("POST", r"^/api/v1/groups/$"),
    ("PATCH", r"^/api/v1/groups/\\{id\\}/$"),
    ("POST", r"^/api/v1/teams/\\{team_slug\\}/members/$"),
    # A webhook's URL must resolve to a public address (in tests: to any address).
    ("POST", r"^/api/v1/teams/\\{team_slug\\}/webhooks/$"),
    ("PATCH", r"^/api/v1/teams/\\{team_slug\\}/webhooks/\\{id\\}/$"),
    # Query parameters likewise: a team, member or key the caller may see, a range that ends
    # after it starts.
    ("GET", r"^/api/v1/usage/export\\.csv$"),
    ("GET", r"^/api/v1/usage/daily/export\\.csv$"),
]
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]


@pytest.fixture
def world(transactional_db, settings):
    """A lead who is staff with the group permissions (so group writes run too), of a team with
    members, keys and two groups."""
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"api_token": "100000/min"},
    }
    user = grant(
        UserFactory(username="fuzzer", is_staff=True), "keys.add_group", "keys.change_group"
    )
    team = MembershipFactory(
        team__slug="acme", team__name="Acme", user=user, role=Membership.Role.LEAD
    ).team
    MembershipFactory(team=team, user__username="fuzz-member")
    groups = [GroupFactory(name="Fuzz Group", models=["claude-*"]), GroupFactory(name="Other")]
    keys = [
        make_key(team=team, owner=user, group=groups[0], name="own").key,
        make_key(team=team, group=groups[1], name="member's").key,
    ]
    webhook = notify_services.webhook_create(
        actor=user, team=team, url="http://127.0.0.1:9/fuzz", event_types=["*"]
    ).webhook
    return {
        "token": services.api_token_create(user=user, name="fuzz", actor=user).plaintext,
        "key_ids": [str(key.pk) for key in keys],
        "group_ids": [str(group.pk) for group in groups],
        "webhook_ids": [str(webhook.pk)],
    }


def _config(world: dict) -> str:
    """schemathesis.toml: real path parameters most of the time, generated ones otherwise."""
    dictionaries = {
        "key_ids": world["key_ids"],
        "group_ids": world["group_ids"],
        "slugs": ["acme"],
        "usernames": ["fuzz-member", "fuzzer"],
        "webhook_ids": world["webhook_ids"],
    }
    lines = []
    for name, values in dictionaries.items():
        lines += [f"[dictionaries.{name}]", f"values = {json.dumps(values)}", ""]
    for path, parameter, dictionary in [
        (r"^/api/v1/keys/\\{id\\}/", "id", "key_ids"),
        (r"^/api/v1/groups/\\{id\\}/", "id", "group_ids"),
        (r"^/api/v1/teams/\\{slug\\}/", "slug", "slugs"),
        (r"^/api/v1/teams/\\{team_slug\\}/", "team_slug", "slugs"),
        (r"^/api/v1/teams/\\{team_slug\\}/members/\\{username\\}/", "username", "usernames"),
        (r"^/api/v1/teams/\\{team_slug\\}/webhooks/\\{id\\}/", "id", "webhook_ids"),
    ]:
        lines += [
            "[[operations]]",
            f'include-path-regex = "{path}"',
            f'parameters = {{ "path.{parameter}" = {{ dictionary = "{dictionary}", '
            "probability = 0.8 } }",
            "",
        ]
    also_400 = json.dumps([*ACCEPTED, "400"])
    for method, path in DATA_DEPENDENT_BODIES:
        lines += [
            "[[operations]]",
            f'include-method = "{method}"',
            f'include-path-regex = "{path}"',
            f"checks.positive_data_acceptance.expected-statuses = {also_400}",
            "",
        ]
    return "\n".join(lines)


def test_every_operation_answers_as_its_schema_says(live_server, world, tmp_path):
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(world))

    result = subprocess.run(
        [
            str(SCHEMATHESIS),
            "--no-color",
            "--config-file",
            str(config),
            "run",
            f"{live_server.url}/api/schema/",
            "--header",
            f"Authorization: Token {world['token']}",
            "--checks",
            ",".join(CHECKS),
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "10",
            "--seed",
            "20261127",
            "--workers",
            "1",
            "--request-timeout",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
    # Every operation, the team's audit trail (GET teams/{slug}/events/), the refusal counts
    # (GET usage/refusals/), the team's key settings (GET, PATCH) and its budget (PATCH) included,
    # its notification settings and the caller's own email choice (GET, PATCH each), the eight
    # of a team's webhooks, and the two usage exports.
    assert "44 selected / 44 total" in result.stdout
