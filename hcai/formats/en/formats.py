"""Django's English formats, with one change: a date and time names its time zone.

The admin (and any template that prints a datetime without a format) shows
"2026-12-07 10:42 UTC" instead of "Dec. 7, 2026, 10:42 a.m.", the way the portal's local_time
filter does, so staff never have to guess which zone a time is in.
"""

DATETIME_FORMAT = "Y-m-d H:i T"
