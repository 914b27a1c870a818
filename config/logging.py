"""Logging that carries ids, never personal data: exception messages are withheld.

An exception's message may hold whatever the code had in hand (an address in a KeyError, a
subject in a header error, a row in a database error): ours and Celery's. So every handler
formats an exception as its type and its frames (code, not data), and Celery's task lines
(`Task … raised unexpected: %(exc)s`, `… retry: %(exc)s`) name the exception's type only.
"""

import logging
import re
import traceback

_EXCEPTION_NAME = re.compile(r"[A-Za-z_][\w.]*")


def exception_name(exc_type: type) -> str:
    module = getattr(exc_type, "__module__", "")
    name = exc_type.__qualname__
    return name if module in ("builtins", "") else f"{module}.{name}"


class WithholdExceptionText(logging.Filter):
    """Replace exceptions passed as log arguments by their type names (Celery passes the
    failed task's exception as `exc`, already turned into its repr)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, dict) and "exc" in args:
            record.args = {**args, "exc": _name_of(args["exc"], record.exc_info)}
        elif isinstance(args, tuple) and any(isinstance(arg, BaseException) for arg in args):
            record.args = tuple(
                exception_name(type(arg)) if isinstance(arg, BaseException) else arg for arg in args
            )
        return True


def _name_of(exc: object, exc_info) -> str:
    if isinstance(exc, BaseException):
        return exception_name(type(exc))
    if exc_info and exc_info[0] is not None:
        return exception_name(exc_info[0])
    match = _EXCEPTION_NAME.match(str(exc))  # "KeyError('…')" → KeyError
    return match.group(0) if match else "exception"


_CAUSE = "\nThe above exception was the direct cause of the following exception:\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n"


class WithholdingFormatter(logging.Formatter):
    """A formatter whose tracebacks keep every frame and exception type, and no message."""

    def formatException(self, ei) -> str:  # noqa: N802 (logging's name)
        _, exc, _ = ei
        if exc is None:
            return ""
        parts: list[str] = []
        seen: set[int] = set()
        while exc is not None and id(exc) not in seen:
            seen.add(id(exc))
            frames = "".join(traceback.format_tb(exc.__traceback__))
            parts.append(
                f"Traceback (most recent call last):\n{frames}"
                f"{exception_name(type(exc))} (message withheld)"
            )
            if exc.__cause__ is not None:
                parts.append(
                    "\nThe above exception was the direct cause of the following exception:\n"
                )
                exc = exc.__cause__
            elif exc.__context__ is not None and not exc.__suppress_context__:
                parts.append(
                    "\nDuring handling of the above exception, another exception occurred:\n"
                )
                exc = exc.__context__
            else:
                exc = None
        return "\n".join(reversed(parts))
