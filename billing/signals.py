"""What billing tells the apps above it, without importing them (they connect receivers).

`usage_settled` is sent once a fold of usage into the totals has committed (ingestion of a
batch, or a settlement batch), so receivers read the committed totals. It is sent off the
relay's path: by the ingest task (Redis) or the embedded relay's writer thread, never by a
request. Arguments:
  - key_ids: frozenset of the ids of the keys whose spend changed;
  - team_ids: frozenset of the ids of the teams whose spend changed (key-less rows included);
  - latest: {key id: the latest `created_at` of that key's folded events}, the moment whose
    windows (day, week, month in the team's clock) the spend was counted in.
A receiver's failure is logged and never undoes or stops the fold (send_robust, robust
on_commit).
"""

from django.dispatch import Signal

usage_settled = Signal()
