"""Django's Simplified Chinese formats, with the English module's one change: a date and time
names its time zone ("2026年12月7日 10:42 UTC")."""

DATETIME_FORMAT = "Y年n月j日 H:i T"
