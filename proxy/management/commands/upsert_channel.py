import os

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.commands import describe_validation_error
from keys.models import Group
from proxy.models import Channel
from proxy.services import channel_upsert

OPTION_FOR_FIELD = {
    "name": "NAME",
    "provider": "--provider",
    "base_url": "--base-url",
    "credential": "--credential-env",
    "timeout_seconds": "--timeout",
}


class Command(BaseCommand):
    help = (
        "Create or update the upstream channel NAME and, with --groups, the groups routed to it. "
        "The credential is read from an environment variable, never from the command line, "
        "so it stays out of shell history and the process list; it is never printed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", metavar="NAME")
        parser.add_argument("--provider", required=True, choices=Channel.Provider.values)
        parser.add_argument(
            "--base-url",
            default="",
            metavar="URL",
            help="The upstream's address; required unless the provider is mock.",
        )
        parser.add_argument(
            "--credential-env",
            metavar="VAR",
            help="Environment variable holding the upstream API key. Omitted: keep the stored one.",
        )
        parser.add_argument(
            "--groups",
            metavar='"G1,G2"',
            help=(
                "Comma-separated group names to route to this channel, exactly (routes to other "
                'groups are removed; "" removes all). Omitted: routing is left as it is.'
            ),
        )
        parser.add_argument("--timeout", type=int, metavar="SECONDS", help="Upstream timeout.")
        parser.add_argument(
            "--inactive", action="store_true", help="Save the channel switched off."
        )

    def handle(self, *args, **options) -> None:
        provider = options["provider"]
        problems: list[str] = []
        try:
            # The model's own rule, checked early so every problem is reported in one go.
            Channel(provider=provider, base_url=options["base_url"]).clean()
        except ValidationError as error:
            problems.append(describe_validation_error(error, OPTION_FOR_FIELD))

        credential = None
        variable = options["credential_env"]
        if variable is not None:
            credential = os.environ.get(variable)
            if not credential:
                problems.append(
                    f"--credential-env: Environment variable {variable} is not set or empty."
                )

        groups = None
        if options["groups"] is not None:
            groups, unknown = _find_groups(options["groups"])
            if unknown:
                known = ", ".join(
                    f"“{name}”" for name in Group.objects.values_list("name", flat=True)
                )
                problems.append(
                    "--groups: No group named "
                    + ", ".join(f"“{name}”" for name in unknown)
                    + f". Known groups: {known or 'none'}."
                )
        if problems:
            raise CommandError("\n".join(problems))

        try:
            channel, created = channel_upsert(
                name=options["name"],
                provider=provider,
                base_url=options["base_url"],
                credential=credential,
                is_active=not options["inactive"],
                timeout_seconds=options["timeout"],
                groups=groups,
            )
        except ValidationError as error:
            raise CommandError(describe_validation_error(error, OPTION_FOR_FIELD)) from None

        state = "active" if channel.is_active else "inactive"
        where = f", {channel.base_url}" if channel.base_url else ""
        self.stdout.write(
            f"{'Created' if created else 'Updated'} channel {channel.name} "
            f"({channel.provider}{where}, {state}, timeout {channel.timeout_seconds} s)"
        )
        if credential is not None:
            self.stdout.write(f"Credential: stored from {variable}")
        else:
            self.stdout.write(f"Credential: {'unchanged' if channel.has_credential else 'none'}")
        routed = ", ".join(channel.groups.order_by("name").values_list("name", flat=True))
        self.stdout.write(f"Groups routed: {routed or 'none'}")
        if not channel.has_credential and channel.provider != Channel.Provider.MOCK:
            self.stderr.write(
                f"Warning: channel {channel.name} has no credential; requests routed to it "
                "will fail until one is set with --credential-env."
            )


def _find_groups(text: str) -> tuple[list[Group], list[str]]:
    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    by_name = Group.objects.in_bulk(names, field_name="name")
    unknown = [name for name in names if name not in by_name]
    return [by_name[name] for name in names if name in by_name], unknown
