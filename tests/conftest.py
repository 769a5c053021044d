import pytest
from django.core.cache import cache

from keys.models import Membership

from .factories import GroupFactory, MembershipFactory, TeamFactory, make_key


@pytest.fixture(autouse=True)
def _clear_cache():
    """Each test starts with an empty cache (local memory or the Redis test database)."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def team(db):
    return TeamFactory(name="Acme", slug="acme")


@pytest.fixture
def other_team(db):
    return TeamFactory(name="Globex", slug="globex")


@pytest.fixture
def group(db):
    return GroupFactory(name="CC Official Channel", models=["claude-*"])


@pytest.fixture
def lead(team):
    return MembershipFactory(team=team, role=Membership.Role.LEAD, user__username="lead").user


@pytest.fixture
def member(team):
    return MembershipFactory(team=team, user__username="member").user


@pytest.fixture
def outsider(other_team):
    return MembershipFactory(
        team=other_team, role=Membership.Role.LEAD, user__username="outsider"
    ).user


@pytest.fixture
def issued(team, member, group):
    """A fresh key of `member` in `team`, with its plaintext."""
    return make_key(team=team, owner=member, group=group, actor=member)
