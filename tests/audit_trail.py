"""Reading the audit trail back in tests: what each row says, in the order written."""

from keys.models import AuditEvent


def audit_rows(**filters) -> list[tuple]:
    """(action, actor's username, team's slug, subject label, changes) of each row."""
    return list(
        AuditEvent.objects.filter(**filters)
        .order_by("id")
        .values_list("action", "actor__username", "team__slug", "subject_label", "changes")
    )
