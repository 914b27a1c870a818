"""What the OpenAPI schema (/api/schema/) says about every endpoint: the one error shape.

Views declare their own request and success bodies (`extend_schema`); the errors every
operation can answer come from here, so the schema and campaigns.api.errors cannot drift.
"""

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="A stable code clients can branch on.")
    field = serializers.CharField(
        help_text='The request field at fault, dotted for nested ones; "" for the whole request.'
    )
    message = serializers.CharField(help_text="What went wrong, for people.")
    row = serializers.IntegerField(
        required=False, help_text="A job's row (from 1), for a row's error."
    )
    line = serializers.IntegerField(
        required=False, help_text="The CSV file's line, for a row of an uploaded CSV."
    )


class ErrorsSerializer(serializers.Serializer):
    errors = ErrorSerializer(many=True)


ERROR_MEANINGS = {
    400: "The request is malformed (bad JSON, wrong types, unknown fields).",
    401: "No API key, or one that is not ours.",
    403: "The key lacks the scope, or is revoked or expired.",
    404: "No such resource (for this key).",
    405: "The endpoint does not answer this method.",
    409: "The resource's state refuses this change, or an Idempotency-Key was reused.",
    413: "The body is larger than this endpoint takes.",
    415: "The body is not in a content type this endpoint takes.",
    422: "The request is well-formed but its values are refused.",
    429: "Over the key's rate limit: retry after the Retry-After header's seconds.",
}


def errors(*statuses: int) -> dict[int, OpenApiResponse]:
    """`responses` entries for these error statuses, all in the one shape."""
    return {
        status: OpenApiResponse(response=ErrorsSerializer, description=ERROR_MEANINGS[status])
        for status in statuses
    }
