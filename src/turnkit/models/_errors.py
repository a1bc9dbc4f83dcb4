"""Provider failures as TurnkitErrors: one HTTP status table and one `Retry-After` reading for all SDKs.

Every provider maps its SDK's errors through `http_error` (an HTTP status and message) or
`transport_error` (timeouts, refused connections), so the same failure has the same canonical status
whichever provider hit it. A wait the provider asked for travels as `details["retryAfter"]` (seconds),
which turnkit's `retry` middleware honours.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from typing import Any

from turnkit.errors import TurnkitError

__all__ = ["http_error", "retry_after", "status_for_http", "transport_error"]

_BY_CODE = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    402: "FAILED_PRECONDITION",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    412: "FAILED_PRECONDITION",
    413: "INVALID_ARGUMENT",
    422: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
}


def status_for_http(code: int) -> str:
    """The canonical status of an HTTP error code: 5xx (and Anthropic's 529 "overloaded") are UNAVAILABLE."""
    if code >= 500:
        return "UNAVAILABLE"
    return _BY_CODE.get(code, "UNKNOWN")


def _seconds(value: str) -> float | None:
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parsed = email.utils.parsedate_tz(value)  # the HTTP-date form of Retry-After
    if parsed is None:
        return None
    return max(0.0, email.utils.mktime_tz(parsed) - time.time())


def _retry_info_delay(body: Any) -> float | None:
    """Google's `google.rpc.RetryInfo` detail (`"retryDelay": "12.5s"`) in an error body."""
    error = body.get("error", body) if isinstance(body, Mapping) else None
    details = error.get("details") if isinstance(error, Mapping) else None
    for detail in details if isinstance(details, list) else []:
        delay = detail.get("retryDelay") if isinstance(detail, Mapping) else None
        if isinstance(delay, str) and (m := re.fullmatch(r"\s*([0-9.]+)s\s*", delay)):
            return float(m.group(1))
    return None


def retry_after(headers: Mapping[str, str] | None, body: Any = None) -> float | None:
    """How long the provider asked to wait, in seconds: `retry-after-ms`, `Retry-After` (seconds or
    an HTTP date), or a Google RetryInfo detail in the body; None when it did not say."""
    if headers is not None:
        lowered = {str(k).lower(): str(v) for k, v in headers.items()}
        if (ms := lowered.get("retry-after-ms")) is not None:
            try:
                return max(0.0, float(ms) / 1000)
            except ValueError:
                pass
        if (value := lowered.get("retry-after")) is not None and (secs := _seconds(value)) is not None:
            return secs
    return _retry_info_delay(body)


def http_error(
    provider: str,
    code: int,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: Any = None,
    status: str | None = None,
) -> TurnkitError:
    """A provider's HTTP error as a TurnkitError: the status from `code` (or `status` when the
    provider named one and there was no HTTP error code), `details` with `httpStatus` and, when the
    provider said, `retryAfter`. Only 400s are public: auth and quota messages describe the server's
    account, not the caller's input."""
    canonical = status or status_for_http(code)
    details: dict[str, Any] = {"httpStatus": code}
    if (wait := retry_after(headers, body)) is not None:
        details["retryAfter"] = wait
    return TurnkitError(
        canonical,
        f"{provider} error {code}: {message}",
        details=details,
        public=canonical == "INVALID_ARGUMENT",
    )


def _is(exc: BaseException, attr: str) -> bool:
    """Whether `exc` is an instance of `httpx.<attr>` or `httpx2.<attr>` (SDKs use either)."""
    import httpx

    classes: list[type[BaseException]] = [getattr(httpx, attr)]
    try:
        import httpx2  # type: ignore[import-not-found, unused-ignore]

        classes.append(getattr(httpx2, attr))
    except ImportError:
        pass
    return isinstance(exc, tuple(classes))


def transport_error(provider: str, exc: BaseException) -> TurnkitError | None:
    """A timeout (DEADLINE_EXCEEDED) or an unreachable server (UNAVAILABLE); None for anything else."""
    if isinstance(exc, TimeoutError) or _is(exc, "TimeoutException"):
        return TurnkitError("DEADLINE_EXCEEDED", f"{provider} request timed out: {exc}", public=False)
    if isinstance(exc, ConnectionError) or _is(exc, "TransportError"):
        return TurnkitError("UNAVAILABLE", f"cannot reach {provider}: {exc}", public=False)
    return None
