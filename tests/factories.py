"""factory_boy factories. Keys are made through the create service, so tests see real keys."""

from decimal import Decimal
from ipaddress import IPv4Address

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from keys import services
from keys.models import Group, Membership, Team


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.com")
    password = factory.django.Password("pw-for-tests-1")


class GroupFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Group
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"Group {n}")
    multiplier = Decimal("1.0")
    models = factory.LazyFunction(lambda: ["claude-*", "gpt-*"])
    is_active = True


class TeamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Team
        django_get_or_create = ("slug",)

    name = factory.Sequence(lambda n: f"Team {n}")
    slug = factory.Sequence(lambda n: f"team-{n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    team = factory.SubFactory(TeamFactory)
    user = factory.SubFactory(UserFactory)
    role = Membership.Role.MEMBER


def distinct_ips(count: int) -> list[str]:
    """`count` different IPv4 addresses (10.0.0.0 upwards), for the IP restriction's cap."""
    return [str(IPv4Address(0x0A000000 + offset)) for offset in range(count)]


def make_key(*, team=None, owner=None, group=None, actor=None, **settings):
    """Create a key through the service; returns services.IssuedKey (key and plaintext)."""
    team = team or TeamFactory()
    if owner is None:
        owner = MembershipFactory(team=team).user
    elif not Membership.objects.filter(team=team, user=owner).exists():
        MembershipFactory(team=team, user=owner)
    settings.setdefault("name", "claude-code-main")
    return services.api_key_create(
        team=team,
        owner=owner,
        group=group or GroupFactory(),
        actor=actor or owner,
        **settings,
    )


def grant(user, *permissions: str):
    """Give `user` Django permissions ("keys.change_apikey"), as the admin's user page does;
    "keys.*" grants every permission of the app. Returns the user, reloaded so that Django's
    permission cache does not hide the new ones."""
    for permission in permissions:
        app_label, codename = permission.split(".")
        found = Permission.objects.filter(content_type__app_label=app_label)
        if codename != "*":
            found = found.filter(codename=codename)
        assert found, f"no permission {permission}"
        user.user_permissions.add(*found)
    return get_user_model().objects.get(pk=user.pk)


def grant_all_but(user, permission: str):
    """Give `user` every permission of the keys and billing apps except `permission` (and,
    for a view permission, the change permission that includes it, as in the admin)."""
    app_label, codename = permission.split(".")
    withheld = {codename, codename.replace("view_", "change_", 1)}
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label__in=["keys", "billing"]).exclude(
            content_type__app_label=app_label, codename__in=withheld
        )
    )
    return get_user_model().objects.get(pk=user.pk)
