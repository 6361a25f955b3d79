"""OAuth 2.0 web-server flow of the emulator, driven over HTTP and through google-auth.

Each test names the Google behaviour it pins (web-server guide:
https://developers.google.com/identity/protocols/oauth2/web-server, reference notes §3).
"""

from __future__ import annotations

import base64
import json

import pytest
from google.auth.exceptions import RefreshError

from tests.emulator.conftest import (
    CAL,
    CAL_EVENTS,
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT,
    Emu,
    http,
    pkce_pair,
)


def test_consent_page_lists_scopes_and_prefills_login_hint(emu: Emu) -> None:
    """Google shows a consent screen for the hinted account, listing the requested scopes."""
    query = "&".join(f"{k}={v}" for k, v in emu.auth_params(login_hint="doc@example.com").items())
    status, _, body = http("GET", f"{emu.url}/o/oauth2/v2/auth?{query}")
    assert status == 200
    page = body.decode()
    assert 'value="doc@example.com"' in page
    assert CAL_EVENTS in page
    assert "/o/oauth2/v2/auth/approve" in page


@pytest.mark.parametrize(
    ("over", "error"),
    [
        ({"client_id": "unknown"}, "invalid_client"),
        ({"redirect_uri": REDIRECT + "/other"}, "redirect_uri_mismatch"),
        ({"redirect_uri": "http://clinic.test/kc-sidecar/oauth/callbac"}, "redirect_uri_mismatch"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": None}, "invalid_request"),
        ({"scope": "https://www.googleapis.com/auth/nonsense"}, "invalid_scope"),
        ({"code_challenge": pkce_pair()[1], "code_challenge_method": "plain"}, "invalid_request"),
        ({"access_type": "sometimes"}, "invalid_request"),
    ],
)
def test_bad_authorization_requests_get_an_error_page_not_a_redirect(
    emu: Emu, over: dict[str, str | None], error: str
) -> None:
    """Google never redirects to an unverified redirect_uri (exact match) and answers malformed
    requests with an "Error 400" page; PKCE "plain" is refused (stricter than Google)."""
    status, query = emu.approve(**over)
    assert status == 400
    assert query == {}
    params = emu.auth_params(**over)
    status, headers, body = http(
        "GET", emu.url + "/o/oauth2/v2/auth?" + "&".join(f"{k}={v}" for k, v in params.items())
    )
    assert status == 400 and "Location" not in headers
    assert error in body.decode()


def test_approve_redirects_with_code_state_and_granted_scope(emu: Emu) -> None:
    """state is echoed back unchanged on the redirect together with the code."""
    status, query = emu.approve(state="opaque/state+value")
    assert status == 302
    assert query["state"] == ["opaque/state+value"]
    assert query["code"][0].startswith("4/")


def test_deny_redirects_with_access_denied_and_state(emu: Emu) -> None:
    """A user who cancels: redirect with error=access_denied and the state."""
    status, query = emu.approve(decision="deny", state="s1")
    assert status == 302
    assert query == {"error": ["access_denied"], "state": ["s1"]}


def test_testing_auto_approve_query_param(emu: Emu) -> None:
    """--testing only: emulator_auto_approve=EMAIL skips the page (emulator extension)."""
    params = emu.auth_params(emulator_auto_approve="auto@example.com", state="x")
    status, headers, _ = http(
        "GET", emu.url + "/o/oauth2/v2/auth?" + "&".join(f"{k}={v}" for k, v in params.items())
    )
    assert status == 302
    query = emu._redirect_query(headers)
    status, tokens = emu.exchange(query["code"][0])
    assert status == 200 and tokens["scope"] == CAL_EVENTS


def test_token_response_shape_on_first_consent(emu: Emu) -> None:
    """Google's token response: access_token, expires_in 3599, scope, token_type Bearer, and a
    refresh_token on the first offline consent."""
    tokens = emu.connect()
    assert set(tokens) == {"access_token", "expires_in", "scope", "token_type", "refresh_token"}
    assert tokens["expires_in"] == 3599
    assert tokens["token_type"] == "Bearer"
    assert tokens["scope"] == CAL_EVENTS


def test_refresh_token_only_on_first_consent_or_prompt_consent(emu: Emu) -> None:
    """Google returns a refresh token only on the first authorization of a client/user pair;
    later exchanges omit it unless prompt=consent is sent (google-api-php-client#263)."""
    assert "refresh_token" in emu.connect()
    assert "refresh_token" not in emu.connect()
    assert "refresh_token" in emu.connect(prompt="consent")
    assert "refresh_token" in emu.connect("other@example.com")


def test_online_access_never_gets_a_refresh_token(emu: Emu) -> None:
    """access_type defaults to online; a refresh token needs access_type=offline."""
    assert "refresh_token" not in emu.connect(access_type=None)


def test_granular_consent_grants_fewer_scopes(emu: Emu) -> None:
    """Under granular consent the granted scope can be a subset of the requested ones."""
    status, query = emu.approve(scope=f"{CAL} {CAL_EVENTS}", granted=[CAL_EVENTS])
    assert query["scope"] == [CAL_EVENTS]
    status, tokens = emu.exchange(query["code"][0])
    assert status == 200 and tokens["scope"] == CAL_EVENTS


def test_unchecking_every_scope_is_a_denial(emu: Emu) -> None:
    _, query = emu.approve(granted=[], state="s")
    assert query["error"] == ["access_denied"]


def test_code_is_single_use(emu: Emu) -> None:
    """Authorization codes are single-use: a replay is invalid_grant."""
    _, query = emu.approve()
    code = query["code"][0]
    assert emu.exchange(code)[0] == 200
    assert emu.exchange(code) == (400, {"error": "invalid_grant",
                                        "error_description": "Bad Request"})


def test_code_expires_after_ten_minutes_of_emulator_clock(emu: Emu) -> None:
    _, query = emu.approve()
    emu.clock.advance(601)
    assert emu.exchange(query["code"][0])[1]["error"] == "invalid_grant"


def test_unknown_code_is_malformed(emu: Emu) -> None:
    assert emu.exchange("4/nonsense") == (400, {"error": "invalid_grant",
                                                "error_description": "Malformed auth code."})


def test_redirect_uri_must_match_the_authorization_request(emu: Emu) -> None:
    _, query = emu.approve()
    status, body = emu.exchange(query["code"][0], redirect_uri=REDIRECT + "?x=1")
    assert status == 400 and body["error"] == "redirect_uri_mismatch"


def test_pkce_s256_verifier_checked(emu: Emu) -> None:
    """PKCE (RFC 7636) S256: the verifier must hash to the challenge."""
    verifier, challenge = pkce_pair()
    _, q1 = emu.approve(code_challenge=challenge, code_challenge_method="S256")
    assert emu.exchange(q1["code"][0]) == (400, {"error": "invalid_grant",
                                                 "error_description": "Missing code verifier."})
    _, q2 = emu.approve(code_challenge=challenge, code_challenge_method="S256")
    status, body = emu.exchange(q2["code"][0], code_verifier=pkce_pair()[0])
    assert (status, body["error"]) == (400, "invalid_grant")
    _, q3 = emu.approve(code_challenge=challenge, code_challenge_method="S256")
    status, body = emu.exchange(q3["code"][0], code_verifier=verifier)
    assert status == 200 and body["access_token"]


def test_verifier_without_challenge_is_rejected(emu: Emu) -> None:
    _, query = emu.approve()
    status, body = emu.exchange(query["code"][0], code_verifier=pkce_pair()[0])
    assert (status, body["error"]) == (400, "invalid_request")


def test_client_authentication_errors(emu: Emu) -> None:
    """invalid_client comes with HTTP 401 (reference §3.4)."""
    _, query = emu.approve()
    code = query["code"][0]
    assert emu.exchange(code, client_secret="wrong") == (
        401, {"error": "invalid_client", "error_description": "Unauthorized"})
    assert emu.exchange(code, client_id="nobody")[0] == 401
    assert emu.exchange(code, client_id=None)[1]["error"] == "invalid_request"


def test_client_auth_by_http_basic(emu: Emu) -> None:
    _, query = emu.approve()
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    status, _, body = http(
        "POST", emu.url + "/token",
        {"grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": REDIRECT},
        headers={"Authorization": "Basic " + basic},
    )
    assert status == 200 and json.loads(body)["access_token"]


def test_grant_type_errors(emu: Emu) -> None:
    status, _, body = http("POST", emu.url + "/token",
                           {"grant_type": "password", "client_id": CLIENT_ID,
                            "client_secret": CLIENT_SECRET})
    assert (status, json.loads(body)["error"]) == (400, "unsupported_grant_type")
    status, _, body = http("POST", emu.url + "/token",
                           {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})
    assert (status, json.loads(body)["error"]) == (400, "invalid_request")


def test_google_auth_refresh_and_expiry_by_clock(emu: Emu) -> None:
    """Access tokens live 3599 s; google-auth refreshes with the refresh_token grant and the
    response carries no new refresh_token, so the old one is kept."""
    tokens = emu.connect()
    creds = emu.credentials(tokens)
    emu.clock.advance(3600)
    assert emu.state.oauth.access(tokens["access_token"]) is None
    creds.refresh(emu.auth_request())
    assert creds.token != tokens["access_token"]
    assert creds.refresh_token == tokens["refresh_token"]
    assert emu.state.oauth.access(creds.token) is not None


def test_refresh_token_of_another_client_is_unauthorized(emu: Emu) -> None:
    tokens = emu.connect()
    emu.state.oauth.clients["other"] = emu.state.oauth.clients[CLIENT_ID]
    status, _, body = http("POST", emu.url + "/token",
                           {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                            "client_id": "other", "client_secret": CLIENT_SECRET})
    assert (status, json.loads(body)["error"]) == (400, "unauthorized_client")


def test_revoke_refresh_token_kills_the_whole_grant(emu: Emu) -> None:
    """Revoking a refresh token revokes the grant: its access tokens stop working and refresh is
    invalid_grant "Token has been expired or revoked." (calcom/cal.diy#7564)."""
    tokens = emu.connect()
    status, _, _ = http("POST", emu.url + "/revoke", {"token": tokens["refresh_token"]})
    assert status == 200
    assert emu.state.oauth.access(tokens["access_token"]) is None
    creds = emu.credentials(tokens)
    with pytest.raises(RefreshError) as info:
        creds.refresh(emu.auth_request())
    assert "Token has been expired or revoked." in str(info.value)
    assert info.value.retryable is False


def test_revoke_access_token_by_query_revokes_the_grant(emu: Emu) -> None:
    tokens = emu.connect()
    status, _, _ = http("POST", f"{emu.url}/revoke?token={tokens['access_token']}", {})
    assert status == 200
    status, _, body = http("POST", emu.url + "/token",
                           {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                            "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})
    assert (status, json.loads(body)["error"]) == (400, "invalid_grant")
    # a new consent after revocation is a first consent again
    assert "refresh_token" in emu.connect()


def test_revoke_unknown_token_is_invalid_token(emu: Emu) -> None:
    status, _, body = http("POST", emu.url + "/revoke", {"token": "nope"})
    assert status == 400 and json.loads(body)["error"] == "invalid_token"


def test_control_revoke_grant_makes_refresh_fail(emu: Emu) -> None:
    tokens = emu.connect()
    assert emu.state.revoke_grant(CLIENT_ID, "doc@example.com")
    with pytest.raises(RefreshError):
        emu.credentials(tokens).refresh(emu.auth_request())


@pytest.mark.parametrize("emu_config", [{"refresh_tokens_per_client_user": 3}])
def test_refresh_token_cap_invalidates_the_oldest(emu: Emu) -> None:
    """Google: a limit of refresh tokens per account per client (100); the next one silently
    invalidates the oldest. Cap lowered to 3 here for speed."""
    first = emu.connect(prompt="consent")["refresh_token"]
    others = [emu.connect(prompt="consent")["refresh_token"] for _ in range(3)]

    def refresh(rt: str) -> int:
        return http("POST", emu.url + "/token",
                    {"grant_type": "refresh_token", "refresh_token": rt,
                     "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})[0]

    assert refresh(first) == 400
    assert [refresh(rt) for rt in others] == [200, 200, 200]


@pytest.mark.parametrize("emu_config", [{"refresh_token_lifetime": 604800}])
def test_testing_mode_refresh_tokens_expire_after_seven_days(emu: Emu) -> None:
    """An app in "Testing" publishing status gets refresh tokens that expire after 7 days."""
    tokens = emu.connect()
    creds = emu.credentials(tokens)
    emu.clock.advance(604800 - 10)
    creds.refresh(emu.auth_request())
    emu.clock.advance(20)
    with pytest.raises(RefreshError):
        creds.refresh(emu.auth_request())


def test_prompt_none_without_prior_consent(emu: Emu) -> None:
    params = emu.auth_params(prompt="none", login_hint="new@example.com", state="q")
    status, headers, _ = http(
        "GET", emu.url + "/o/oauth2/v2/auth?" + "&".join(f"{k}={v}" for k, v in params.items())
    )
    assert status == 302
    assert emu._redirect_query(headers)["error"] == ["consent_required"]


def test_token_endpoint_5xx_is_retried_by_google_auth(emu: Emu) -> None:
    """google-auth retries the token endpoint on 500/503
    (transport.DEFAULT_RETRYABLE_STATUS_CODES)."""
    tokens = emu.connect()
    emu.state.inject_faults("oauth2.token", ["503"])
    creds = emu.credentials(tokens)
    creds.refresh(emu.auth_request())
    statuses = [e["status"] for e in emu.state.requests("oauth2.token")]
    assert statuses[-2:] == [503, 200]


def test_request_log_never_holds_tokens(emu: Emu) -> None:
    tokens = emu.connect()
    dumped = json.dumps(emu.state.requests()) + json.dumps(emu.state.dump())
    assert tokens["access_token"] not in dumped
    assert tokens["refresh_token"] not in dumped
    assert CLIENT_SECRET not in dumped
