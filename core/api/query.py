"""The one reading of query parameters for every API view: filters and pagination alike.

DRF reads a query string like an HTML form, where an empty value means "not sent": `?team=`
would quietly list every team's keys, and a pagination parameter that does not parse falls
back to the default. Here a parameter that is sent is checked as sent, so `?team=`,
`?page_size=null` or `?page=0` get a 400 that names the parameter, like any bad body field.
"""

from django.http import QueryDict
from rest_framework import serializers

REPEATED = "Give this parameter once."


def validated_query(serializer_class: type[serializers.Serializer], query: QueryDict) -> dict:
    """The parameters serializer_class declares, checked; the others are not this view's."""
    values, errors = {}, {}
    for name in serializer_class().fields:
        sent = query.getlist(name)
        if len(sent) > 1:
            errors[name] = [REPEATED]
        elif sent:
            values[name] = sent[0]
    # A plain dict, not the QueryDict: DRF would read an empty value as "not sent".
    serializer = serializer_class(data=values)
    if not serializer.is_valid():
        errors.update(serializer.errors)
    if errors:
        raise serializers.ValidationError(errors)
    return serializer.validated_data
