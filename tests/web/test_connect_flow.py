"""Connecting and disconnecting a Google account over real HTTP: a WordPress-minted cookie, the
sidecar's pages, the emulator's consent, and PHP reading what the sidecar stored."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import requests
from web_clinic import SITE_URL, Clinic, approve_at_emulator, csrf_from, query_of

from sidecar.google_api import AuthRevoked

pytestmark = pytest.mark.php

TOKEN_META = "google_meet_access_token"


@pytest.fixture(scope="module")
def clinic(clinic_factory: Any) -> Clinic:
    return clinic_factory()


def php_connection(clinic: Clinic, user_id: int) -> dict[str, Any]:
    """Everything the Meet add-on reads for a doctor, in one PHP run."""
    return clinic.wp.call(f"""
        $keys = array('google_meet_access_token', 'kiviCare_google_meet_connect',
                      'telemed_type', 'kiviCare_doctor_meet_id', 'kiviCare_zoom_telemed_connect');
        $out = array();
        foreach ($keys as $k) {{ $out[$k] = get_user_meta({int(user_id)}, $k, true); }}
        return $out;
    """)


def test_doctor_connects_then_disconnects(clinic: Clinic) -> None:
    doctor = clinic.ids["doc_one"]
    browser = clinic.browser("doc_one")

    first = browser.get(clinic.url("/connect"), allow_redirects=False)
    assert first.status_code == 302
    auth_url = first.headers["Location"]
    assert auth_url.startswith(clinic.emulator.url + "/o/oauth2/v2/auth?")
    params = query_of(auth_url)
    assert params["redirect_uri"] == clinic.url("/oauth/callback")
    assert params["code_challenge_method"] == "S256"
    assert params["access_type"] == "offline"
    assert "code_verifier" not in auth_url  # the verifier stays on the server

    callback = approve_at_emulator(auth_url, "doc.one@gmail.test")
    done = browser.get(callback, allow_redirects=False)
    assert done.status_code == 303, done.text
    assert done.headers["Location"] == clinic.url("/me")

    stored = php_connection(clinic, doctor)
    token = json.loads(stored[TOKEN_META])
    assert set(token) == {"access_token", "refresh_token", "expires_in", "scope"}
    assert token["access_token"] and token["refresh_token"]
    assert token["scope"] == "https://www.googleapis.com/auth/calendar"
    assert abs(token["expires_in"] - (clinic.clock.time() + 3599 - 300)) <= 5
    assert stored["kiviCare_google_meet_connect"] == "on"
    assert stored["telemed_type"] == "googlemeet"
    assert stored["kiviCare_doctor_meet_id"] == "primary"

    page = browser.get(clinic.url("/me"))
    assert page.status_code == 200
    assert "Connected" in page.text and "Disconnect Google" in page.text
    assert token["access_token"] not in page.text and token["refresh_token"] not in page.text

    revokes_before = len(clinic.emulator_requests("oauth2.revoke"))
    gone = browser.post(clinic.url("/disconnect"),
                        data={"csrf_token": csrf_from(page.text), "doctor": str(doctor)},
                        headers={"Origin": "null"}, allow_redirects=False)
    assert gone.status_code == 303, gone.text
    assert gone.headers["Location"] == clinic.url("/me")

    stored = php_connection(clinic, doctor)
    assert stored[TOKEN_META] == ""
    assert stored["kiviCare_google_meet_connect"] == "off"
    assert len(clinic.emulator_requests("oauth2.revoke")) == revokes_before + 1

    calls = len(clinic.emulator_requests())
    after = browser.get(clinic.url("/me"))
    assert "Not connected" in after.text and "Connect Google Calendar" in after.text
    with pytest.raises(AuthRevoked):  # what the sync engine gets for this doctor now
        clinic.runtime.google_factory(doctor).list_events("primary")
    assert len(clinic.emulator_requests()) == calls  # a disconnected doctor costs no call


def test_callback_cannot_be_replayed(clinic: Clinic) -> None:
    doctor = clinic.ids["doc_two"]
    browser = clinic.browser("doc_two")
    first = browser.get(clinic.url("/connect"), allow_redirects=False)
    callback = approve_at_emulator(first.headers["Location"], "doc.two@gmail.test")
    assert browser.get(callback, allow_redirects=False).status_code == 303
    before = clinic.usermeta_rows(doctor)

    again = browser.get(callback, allow_redirects=False)

    assert again.status_code == 400
    assert "already been used" in again.text
    assert clinic.usermeta_rows(doctor) == before


def test_admin_connects_a_doctor_and_returns_to_wp_admin(clinic: Clinic) -> None:
    doctor = clinic.ids["doc_three"]
    back = SITE_URL + "/wp-admin/admin.php?page=dashboard"
    browser = clinic.browser("admin")
    first = browser.get(clinic.url("/connect"), params={"doctor": doctor, "return": back},
                        allow_redirects=False)
    assert first.status_code == 302
    done = browser.get(approve_at_emulator(first.headers["Location"], "doc3@gmail.test"),
                       allow_redirects=False)
    assert done.status_code == 303
    assert done.headers["Location"] == back
    assert clinic.usermeta_rows(doctor)["kiviCare_google_meet_connect"] == "on"
    # the runtime's per-doctor client now reaches that doctor's (emulated) calendar
    clinic.runtime.google_factory(doctor).list_events("primary")
    assert clinic.emulator.app.emulator.requests("calendar.events.list", user="doc3@gmail.test")

    listing = browser.get(clinic.url("/admin"))
    assert listing.status_code == 200
    row = re.search(r"Doc_Three.*?</tr>", listing.text, re.S)
    assert row and "Connected" in row.group(0) and "Not connected" not in row.group(0)


def test_declining_at_google_stores_nothing(clinic: Clinic) -> None:
    doctor = clinic.ids["doc_one"]
    browser = clinic.browser("doc_one")
    before = clinic.usermeta_rows(doctor)
    first = browser.get(clinic.url("/connect"), allow_redirects=False)
    denied = requests.get(first.headers["Location"] + "&emulator_auto_approve=deny",
                          allow_redirects=False, timeout=10).headers["Location"]
    assert query_of(denied)["error"] == "access_denied"

    answer = browser.get(denied, allow_redirects=False)

    assert answer.status_code == 400
    assert "chose not to give" in answer.text
    assert clinic.usermeta_rows(doctor) == before


def test_invite_link_connects_without_wordpress_login_once(clinic: Clinic) -> None:
    doctor = clinic.ids["doc_one"]
    admin = clinic.browser("admin")
    listing = admin.get(clinic.url("/admin"))
    made = admin.post(clinic.url("/admin/invite"),
                      data={"csrf_token": csrf_from(listing.text), "doctor": str(doctor)})
    assert made.status_code == 200
    link = re.search(r"<code>([^<]+)</code>", made.text).group(1)
    assert link.startswith(clinic.url("/invite/"))

    stranger = clinic.browser()  # the doctor's phone: no WordPress session
    first = stranger.get(link, allow_redirects=False)
    assert first.status_code == 302
    done = stranger.get(approve_at_emulator(first.headers["Location"], "doc1@gmail.test"),
                        allow_redirects=False)
    assert done.status_code == 200 and "connected" in done.text
    assert clinic.usermeta_rows(doctor)["kiviCare_google_meet_connect"] == "on"

    reused = clinic.browser().get(link, allow_redirects=False)
    assert reused.status_code == 400
    assert "already been used" in reused.text


# -- the CLI: kc-sidecar connect-url / disconnect ------------------------------------------------




def write_config(clinic: Clinic, path: Any) -> str:
    s = clinic.runtime.settings
    lines = [
        "[database]", f"url = {json.dumps(str(s.database.url))}",
        "[wordpress]", f"site_url = {json.dumps(SITE_URL)}",
        "[sidecar]", f"public_url = {json.dumps(s.sidecar.public_url)}",
        f"secret_key = {json.dumps(s.sidecar.secret_key)}",
        "[google]", f"client_id = {json.dumps(s.google.client_id)}",
        f"client_secret = {json.dumps(s.google.client_secret)}",
        f"auth_uri = {json.dumps(s.google.auth_uri)}",
        f"token_uri = {json.dumps(s.google.token_uri)}",
        f"revoke_uri = {json.dumps(s.google.revoke_uri)}",
    ]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.mark.usefixtures("restore_root_logger")
def test_cli_invite_then_cli_disconnect(clinic: Clinic, tmp_path: Any, capsys: Any) -> None:
    from sidecar.cli import main

    doctor = clinic.ids["doc_two"]
    config = write_config(clinic, tmp_path / "sidecar.toml")
    assert main(["--config", config, "connect-url", "--doctor", str(doctor), "--ttl", "24h"]) == 0
    link = capsys.readouterr().out.strip()
    assert link.startswith(clinic.url("/invite/")) and "\n" not in link

    browser = clinic.browser()
    first = browser.get(link, allow_redirects=False)
    done = browser.get(approve_at_emulator(first.headers["Location"], "cli@gmail.test"),
                       allow_redirects=False)
    assert done.status_code == 200
    assert clinic.usermeta_rows(doctor)["kiviCare_google_meet_connect"] == "on"
    reused = clinic.browser().get(link, allow_redirects=False)  # the link works once
    assert reused.status_code == 400 and "already been used" in reused.text

    revokes = len(clinic.emulator_requests("oauth2.revoke"))
    assert main(["--config", config, "disconnect", "--doctor", str(doctor)]) == 0
    assert "Google access revoked" in capsys.readouterr().out
    assert php_connection(clinic, doctor)[TOKEN_META] == ""
    assert clinic.usermeta_rows(doctor)["kiviCare_google_meet_connect"] == "off"
    assert len(clinic.emulator_requests("oauth2.revoke")) == revokes + 1


@pytest.mark.usefixtures("restore_root_logger")
def test_cli_refuses_bad_invites(clinic: Clinic, tmp_path: Any, capsys: Any) -> None:
    from sidecar.cli import main

    config = write_config(clinic, tmp_path / "sidecar.toml")
    patient = str(clinic.ids["pat"])
    assert main(["--config", config, "connect-url", "--doctor", patient]) == 1
    assert "not a KiviCare doctor" in capsys.readouterr().err
    doctor = str(clinic.ids["doc_one"])
    assert main(["--config", config, "connect-url", "--doctor", doctor, "--ttl", "60d"]) == 2
    assert "30 days" in capsys.readouterr().err
    assert main(["--config", config, "disconnect", "--doctor", "99999"]) == 1
    assert "no WordPress user 99999" in capsys.readouterr().err
