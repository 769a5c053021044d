"""What an invitation action may have written, for the tests that assert a refused one wrote
nothing: invitations, team audit rows, memberships and emails sent."""

from django.core import mail

from keys.models import AuditEvent, Invitation, Membership


def written() -> tuple:
    return (
        list(Invitation.objects.values()),
        list(AuditEvent.objects.filter(team__isnull=False).values()),
        list(Membership.objects.values_list("team_id", "user_id", "role")),
        len(mail.outbox),
    )
