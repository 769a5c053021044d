"""Query parameters, read the same way by every list endpoint (core.api.query): a parameter that
is sent is checked as sent. DRF alone reads `?team=` as "no team filter" and falls back to the
default page size for `?page_size=null`, so the caller silently gets other rows than asked for."""

import pytest

from ...factories import make_key

BLANK = "This field may not be blank."
NOT_AN_INTEGER = "A valid integer is required."
AT_LEAST_1 = "Ensure this value is greater than or equal to 1."
REPEATED = "Give this parameter once."

# Every endpoint that pages its answer; {key} is a key's id.
PAGED = [
    "/api/v1/keys/",
    "/api/v1/keys/{key}/events/",
    "/api/v1/groups/",
    "/api/v1/teams/",
    "/api/v1/teams/acme/members/",
    "/api/v1/usage/",
    "/api/v1/usage/daily/",
]


@pytest.fixture
def key(team, lead, group):
    return make_key(team=team, owner=lead, group=group, name="own").key


@pytest.mark.parametrize(
    ("path", "query", "errors"),
    [
        ("/api/v1/keys/", "team=", {"team": [BLANK]}),
        ("/api/v1/keys/", "owner=", {"owner": [BLANK]}),
        ("/api/v1/keys/", "search=", {"search": [BLANK]}),
        ("/api/v1/keys/", "status=", {"status": ['"" is not a valid choice.']}),
        ("/api/v1/keys/", "state=", {"state": ['"" is not a valid choice.']}),
        ("/api/v1/keys/", "ordering=", {"ordering": ['"" is not a valid choice.']}),
        ("/api/v1/keys/", "group=", {"group": [NOT_AN_INTEGER]}),
        ("/api/v1/keys/", "group=null", {"group": [NOT_AN_INTEGER]}),
        ("/api/v1/keys/", "team=acme&team=globex", {"team": [REPEATED]}),
        ("/api/v1/groups/", "team=", {"team": [BLANK]}),
        ("/api/v1/groups/", "team=acme&team=acme", {"team": [REPEATED]}),
        ("/api/v1/usage/", "team=", {"team": [BLANK]}),
        ("/api/v1/usage/", "key=", {"key": [NOT_AN_INTEGER]}),
        ("/api/v1/usage/", "model=", {"model": [BLANK]}),
        (
            "/api/v1/usage/",
            "until=",
            {
                "until": [
                    "Datetime has wrong format. Use one of these formats instead: "
                    "YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z]."
                ]
            },
        ),
        (
            "/api/v1/usage/daily/",
            "since=",
            {"since": ["Date has wrong format. Use one of these formats instead: YYYY-MM-DD."]},
        ),
        ("/api/v1/usage/daily/", "key=1&key=2", {"key": [REPEATED]}),
    ],
)
def test_a_filter_sent_empty_null_or_twice_is_refused(api, lead, key, path, query, errors):
    response = api(lead).get(f"{path}?{query}")

    assert response.status_code == 400
    assert response.json() == errors


@pytest.mark.parametrize("path", PAGED)
@pytest.mark.parametrize(
    ("query", "errors"),
    [
        ("page_size=null", {"page_size": [NOT_AN_INTEGER]}),
        ("page_size=", {"page_size": [NOT_AN_INTEGER]}),
        ("page_size=1.5", {"page_size": [NOT_AN_INTEGER]}),
        ("page_size=0", {"page_size": [AT_LEAST_1]}),
        ("page_size=201", {"page_size": ["Ensure this value is less than or equal to 200."]}),
        ("page_size=1&page_size=2", {"page_size": [REPEATED]}),
        ("page=0", {"page": [AT_LEAST_1]}),
        ("page=-1", {"page": [AT_LEAST_1]}),
        ("page=abc", {"page": [NOT_AN_INTEGER]}),
        ("page=last", {"page": [NOT_AN_INTEGER]}),
        ("page=", {"page": [NOT_AN_INTEGER]}),
        ("page=1&page=1", {"page": [REPEATED]}),
    ],
)
def test_a_bad_page_or_page_size_is_refused(api, lead, key, path, query, errors):
    response = api(lead).get(f"{path.format(key=key.pk)}?{query}")

    assert response.status_code == 400
    assert response.json() == errors


@pytest.mark.parametrize("path", PAGED)
def test_the_page_size_bounds_are_accepted(api, lead, key, path):
    client = api(lead)
    path = path.format(key=key.pk)

    assert client.get(f"{path}?page=1&page_size=1").status_code == 200
    assert client.get(f"{path}?page_size=200").status_code == 200


def test_page_size_picks_how_many_rows_a_page_holds(api, lead, team, group, key):
    make_key(team=team, owner=lead, group=group, name="second")

    first = api(lead).get("/api/v1/keys/?page_size=1&ordering=name").json()
    second = api(lead).get("/api/v1/keys/?page_size=1&ordering=name&page=2").json()

    assert (first["count"], [row["name"] for row in first["results"]]) == (2, ["own"])
    assert [row["name"] for row in second["results"]] == ["second"]


def test_parameters_of_no_concern_to_the_endpoint_are_ignored(api, lead, key):
    response = api(lead).get("/api/v1/teams/?team=&format_version=2")

    assert response.status_code == 200
    assert [team["slug"] for team in response.json()["results"]] == ["acme"]
