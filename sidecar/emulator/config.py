"""Configuration of the local Google emulator (one immutable object per emulator instance)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sidecar.clock import Clock, SystemClock


@dataclass(frozen=True)
class ClientRegistration:
    """An OAuth client: its secret and the redirect URIs it may use.

    A redirect entry ending in ``*`` is a prefix (``https://clinic.example/kc-sidecar/*``);
    any other entry must match the ``redirect_uri`` of a request exactly, as Google requires.
    """

    secret: str
    redirect_uris: tuple[str, ...]

    def allows_redirect(self, uri: str) -> bool:
        for entry in self.redirect_uris:
            if entry.endswith("*"):
                if uri.startswith(entry[:-1]):
                    return True
            elif uri == entry:
                return True
        return False


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything an emulator instance is built from.

    ``clients`` maps client_id to ``(secret, [redirect uris or prefixes ending in *])`` or to a
    :class:`ClientRegistration`. Durations are seconds measured on ``clock``.
    """

    clients: dict[str, tuple[str, list[str]] | ClientRegistration] = field(default_factory=dict)
    testing: bool = False
    clock: Clock = field(default_factory=SystemClock)
    #: seconds after creation at which a Meet ``createRequest`` turns from pending to success
    conference_delay_seconds: float = 1.0
    access_token_lifetime: int = 3599
    auth_code_lifetime: int = 600
    #: ``None``: refresh tokens live until revoked;
    #: 604800 models a consent screen in "Testing" publishing status
    refresh_token_lifetime: int | None = None
    refresh_tokens_per_client_user: int = 100
    channel_ttl: int = 604800
    #: longest channel lifetime granted; a longer ``params.ttl`` is clamped to it
    channel_max_ttl: int = 604800
    latency_seconds: float = 0.0
    per_user_quota_per_minute: int = 600
    #: "auto": a background thread delivers push notifications; "manual": only deliver_pending()
    push_mode: str = "auto"
    push_max_attempts: int = 5
    push_retry_base_seconds: float = 1.0
    push_timeout_seconds: float = 5.0
    seed: int = 0
    request_log_limit: int = 10000

    def client_registrations(self) -> dict[str, ClientRegistration]:
        out: dict[str, ClientRegistration] = {}
        for client_id, reg in self.clients.items():
            if isinstance(reg, ClientRegistration):
                out[client_id] = reg
            else:
                secret, uris = reg
                out[client_id] = ClientRegistration(secret, tuple(uris))
        return out
