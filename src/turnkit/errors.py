"""The one error type turnkit raises, with canonical (gRPC-style) status names."""

from __future__ import annotations

from typing import Any, Literal, get_args

__all__ = ["HTTP_STATUS", "RETRYABLE", "STATUS_NAMES", "StatusName", "TurnkitError", "as_turnkit_error"]

StatusName = Literal[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
]

STATUS_NAMES: frozenset[str] = frozenset(get_args(StatusName))

# HTTP codes used before a response has started (PROTOCOL.md, "Error statuses").
HTTP_STATUS: dict[str, int] = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
}

# Statuses a retry may cure: the failure was about timing or load, not the request.
RETRYABLE: frozenset[str] = frozenset(
    {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "INTERNAL"}
)


class TurnkitError(Exception):
    """An error with a canonical status name, a message, and optional JSON details.

    `public` marks the message as safe to show to a remote client; a server replaces the
    message of a non-public error that did not come from the client's own input.
    """

    def __init__(
        self,
        status: StatusName | str,
        message: str,
        *,
        details: Any = None,
        public: bool = True,
    ) -> None:
        if status not in STATUS_NAMES:
            raise ValueError(f"unknown status name {status!r}")
        super().__init__(message)
        self.status: str = status
        self.message = message
        self.details = details
        self.public = public

    @property
    def http_status(self) -> int:
        """The HTTP status code this error maps to before a response has started."""
        return HTTP_STATUS[self.status]

    @property
    def retryable(self) -> bool:
        """Whether the status says the same request may succeed if tried again."""
        return self.status in RETRYABLE

    def to_wire(self) -> dict[str, Any]:
        """The `{status, message, details}` object used in outputs, snapshots and error frames."""
        out: dict[str, Any] = {"status": self.status, "message": self.message}
        if self.details is not None:
            out["details"] = self.details
        return out

    def __str__(self) -> str:
        return f"{self.status}: {self.message}"

    def __repr__(self) -> str:
        return f"TurnkitError({self.status!r}, {self.message!r})"


def as_turnkit_error(exc: BaseException) -> TurnkitError:
    """Wrap any exception as a TurnkitError; non-turnkit errors become INTERNAL and non-public, with
    the original kept as `__cause__` (its traceback too)."""
    if isinstance(exc, TurnkitError):
        return exc
    wrapped = TurnkitError("INTERNAL", str(exc) or type(exc).__name__, public=False)
    wrapped.__cause__ = exc
    return wrapped
