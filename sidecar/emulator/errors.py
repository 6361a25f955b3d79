"""Google's error shapes: the Calendar API envelope and the OAuth token-endpoint body.

googleapiclient's retry logic reads ``error.errors[0].reason``, so every Calendar error is produced
here, in one place, in exactly Google's envelope.
"""

from __future__ import annotations

from typing import Any

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    410: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
}


class ApiError(Exception):
    """A Calendar API error; ``body()`` is Google's JSON envelope."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        domain: str = "global",
        location: str | None = None,
        location_type: str | None = None,
        top_message: str | None = None,
        status: str | None = None,
    ) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.domain = domain
        self.location = location
        self.location_type = location_type
        self.top_message = top_message or message
        self.status = status

    def body(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "domain": self.domain,
            "reason": self.reason,
            "message": self.message,
        }
        if self.location_type:
            item["locationType"] = self.location_type
        if self.location:
            item["location"] = self.location
        err: dict[str, Any] = {"errors": [item], "code": self.code, "message": self.top_message}
        if self.status:
            err["status"] = self.status
        return {"error": err}


def auth_error() -> ApiError:
    """401 for a missing, malformed, expired or revoked access token."""
    return ApiError(
        401,
        "authError",
        "Invalid Credentials",
        location="Authorization",
        location_type="header",
    )


def insufficient_scope() -> ApiError:
    return ApiError(
        403,
        "insufficientPermissions",
        "Insufficient Permission",
        top_message="Request had insufficient authentication scopes.",
        status="PERMISSION_DENIED",
    )


def invalid(message: str, location: str | None = None, reason: str = "invalid") -> ApiError:
    return ApiError(400, reason, message, location=location,
                    location_type="parameter" if location else None)


def required(message: str, location: str | None = None) -> ApiError:
    return ApiError(400, "required", message, location=location,
                    location_type="parameter" if location else None)


def not_found() -> ApiError:
    return ApiError(404, "notFound", "Not Found")


def deleted() -> ApiError:
    return ApiError(410, "deleted", "Resource has been deleted")


def duplicate() -> ApiError:
    return ApiError(409, "duplicate", "The requested identifier already exists.")


def full_sync_required() -> ApiError:
    return ApiError(
        410,
        "fullSyncRequired",
        "Sync token is no longer valid, a full sync is required.",
        domain="calendar",
    )


def fault(kind: str) -> ApiError:
    """An injectable failure by name; the names are the reasons googleapiclient sees."""
    if kind == "rateLimitExceeded":
        return ApiError(403, "rateLimitExceeded", "Rate Limit Exceeded", domain="usageLimits")
    if kind == "userRateLimitExceeded":
        return ApiError(403, "userRateLimitExceeded", "User Rate Limit Exceeded",
                        domain="usageLimits")
    if kind == "quotaExceeded":
        return ApiError(403, "quotaExceeded", "Calendar usage limits exceeded.",
                        domain="usageLimits")
    if kind in ("429", "tooManyRequests"):
        return ApiError(429, "rateLimitExceeded", "Rate Limit Exceeded", domain="usageLimits",
                        status="RESOURCE_EXHAUSTED")
    if kind in ("500", "backendError"):
        return ApiError(500, "backendError", "Backend Error", status="INTERNAL")
    if kind in ("503", "unavailable"):
        return ApiError(503, "backendError", "The service is currently unavailable.",
                        status="UNAVAILABLE")
    if kind == "fullSyncRequired":
        return full_sync_required()
    raise ValueError(f"unknown fault kind {kind!r}")


FAULT_KINDS = (
    "rateLimitExceeded",
    "userRateLimitExceeded",
    "quotaExceeded",
    "429",
    "500",
    "backendError",
    "503",
    "unavailable",
)


class OAuthError(Exception):
    """A token/revoke endpoint error in Google's flat ``{"error", "error_description"}`` shape."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{status} {error}: {description}")
        self.status = status
        self.error = error
        self.description = description

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class AuthPageError(Exception):
    """An authorization request Google answers with an error page, never with a redirect."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
