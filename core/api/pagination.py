from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination

from .query import validated_query

PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


class PageQuerySerializer(serializers.Serializer):
    page = serializers.IntegerField(required=False, min_value=1, default=1)
    page_size = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_PAGE_SIZE, default=PAGE_SIZE
    )


class ApiPagination(PageNumberPagination):
    """Pages as DRF numbers them, with `page` and `page_size` checked like every other query
    parameter: DRF would quietly use the default size for `?page_size=null` or cut 500 down
    to the maximum, and answer `?page=0` with a 404."""

    page_size = PAGE_SIZE
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE

    def paginate_queryset(self, queryset, request, view=None):
        self.requested = validated_query(PageQuerySerializer, request.query_params)
        return super().paginate_queryset(queryset, request, view)

    def get_page_size(self, request) -> int:
        return self.requested["page_size"]

    def get_page_number(self, request, paginator) -> int:
        return self.requested["page"]

    def get_schema_operation_parameters(self, view) -> list[dict]:
        page, page_size = super().get_schema_operation_parameters(view)
        page["schema"].update(minimum=1, default=1)
        page_size["schema"].update(minimum=1, maximum=MAX_PAGE_SIZE, default=PAGE_SIZE)
        return [page, page_size]
