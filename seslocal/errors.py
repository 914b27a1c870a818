"""SES v2 error responses, shaped the way botocore's rest-json parser reads them.

botocore takes the error code from the ``x-amzn-ErrorType`` header (anything after a
``:`` is dropped) and the message from the JSON body's ``message`` key; the HTTP status
must match the error shape's ``httpStatusCode`` in the service model for
``client.exceptions.<Code>`` to be raised.
"""

from __future__ import annotations

# HTTP status per error code: modeled SES v2 errors use the model's status; the others
# are generic AWS errors that every service can return.
STATUS_BY_CODE: dict[str, int] = {
    "AccountSuspendedException": 400,
    "AlreadyExistsException": 400,
    "BadRequestException": 400,
    "LimitExceededException": 400,
    "MessageRejected": 400,
    "NotFoundException": 404,
    "SendingPausedException": 400,
    "TooManyRequestsException": 429,
    # generic AWS errors
    "SerializationException": 400,
    "MissingAuthenticationTokenException": 403,
    "IncompleteSignatureException": 403,
    "UnknownOperationException": 404,
    "InternalFailure": 500,
    "ServiceUnavailable": 503,
}


class SesError(Exception):
    """An error answer: HTTP status, ``x-amzn-ErrorType`` code and message."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status if status is not None else STATUS_BY_CODE.get(code, 400)

    def body(self) -> dict[str, str]:
        return {"message": self.message}


def bad_request(message: str) -> SesError:
    return SesError("BadRequestException", message)


def not_found(message: str) -> SesError:
    return SesError("NotFoundException", message)


def throttled() -> SesError:
    # The text real SES uses when the account's sending rate is exceeded.
    return SesError("TooManyRequestsException", "Maximum sending rate exceeded.")
