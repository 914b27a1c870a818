"""The SesClient on a plain boto3 sesv2 client (SES_CLIENT=boto3).

The reference implementation: the requests the lean client sends are checked against it, and
it is there for an installation that wants boto3's own HTTP stack (its proxies, its CA
bundle settings). One attempt per call, as SES_CLIENT_CONFIG configures it: the pipeline
decides what to do with each answer. botocore's exceptions become the four SesErrors.
"""

from __future__ import annotations

from collections.abc import Callable

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
    ProxyConnectionError,
)

from campaigns.ses import calls
from campaigns.ses.base import (
    SesError,
    SesOutcomeUnknown,
    SesRejected,
    SesUnreachable,
)

# Before the request left: no connection made, or nothing to send it with.
_UNREACHABLE = (EndpointConnectionError, ConnectTimeoutError, ProxyConnectionError,
                CredentialRetrievalError)  # fmt: skip
_REFUSED_HERE = (ParamValidationError, NoCredentialsError, PartialCredentialsError, NoRegionError)


class BotoSesClient(calls.SesClient):
    """The SesClient over a boto3 sesv2 client (boto3 clients are thread-safe)."""

    def __init__(self, boto3_client) -> None:
        self._client = boto3_client

    def _send(self, operation: str, params: dict) -> object:
        method = {
            "SendBulkEmail": self._client.send_bulk_email,
            "SendEmail": self._client.send_email,
        }
        return _call(operation, method[operation], params)

    def template_create(self, *, name: str, subject: str, html: str, text: str) -> None:
        params = calls.template_params(name=name, subject=subject, html=html, text=text)
        try:
            _call("CreateEmailTemplate", self._client.create_email_template, params)
        except SesRejected as err:
            if err.code != "AlreadyExistsException":
                raise

    def send_quota(self) -> calls.SendQuota:
        return calls.send_quota(_call("GetAccount", self._client.get_account, {}))

    def close(self) -> None:
        """Nothing per thread: botocore's connection pool is the client's."""


def _call(operation: str, method: Callable[..., dict], params: dict) -> dict:
    try:
        return method(**params)
    except ClientError as err:
        # `from None`: botocore's message may name an address, and a traceback shows causes.
        raise _client_error(operation, err) from None
    except BotoCoreError as err:
        raise _local_error(operation, err) from None
    except Exception as err:
        # botocore's parser raises AttributeError or TypeError on an answer of the wrong
        # shape (a list where an object belongs), after SES had the call: it may have sent.
        raise SesOutcomeUnknown(
            f"{operation}: no readable answer ({type(err).__name__})", code="UnreadableAnswer"
        ) from None


def _client_error(operation: str, err: ClientError) -> SesError:
    error = err.response.get("Error") or {}
    status = (err.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    code = str(error.get("Code") or status or "ClientError")
    message = error.get("Message")
    return calls.answer_error(
        operation=operation,
        code=code,
        status=status,
        message=message if isinstance(message, str) else "",
    )


def _local_error(operation: str, err: BotoCoreError) -> SesError:
    """No answer from SES: unreachable if the request never left, refused here if botocore
    would not send it, else (a read timeout, a reset, an unreadable answer, an SSL error
    that may come mid-answer) the outcome is unknown."""
    code = type(err).__name__
    if isinstance(err, _UNREACHABLE):
        return SesUnreachable(f"{operation}: no connection to SES ({code})", code=code)
    if isinstance(err, _REFUSED_HERE):
        return SesRejected(f"{operation}: not sent ({code})", code=code)
    return SesOutcomeUnknown(f"{operation}: no readable answer ({code})", code=code)
