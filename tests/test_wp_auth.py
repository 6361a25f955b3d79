"""sidecar.wp_auth against cookies minted by real WordPress (PHP) in a real MariaDB database.

One WordPress site per module: installed by wp_install(), users created by wp_insert_user(),
cookies minted by WP_Session_Tokens + wp_generate_auth_cookie(), and WordPress's own
wp_validate_auth_cookie() used as the oracle. Destructive cases (logout, password change,
deletion) each use their own user.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus, unquote_plus

import pytest
import sqlalchemy as sa

from sidecar.clock import FakeClock
from sidecar.wp_auth import (
    SAMPLE_PHRASE,
    CookieValidator,
    LoggedInKeys,
    WpUser,
    can_manage_doctor,
    cookie_hash_for,
    is_doctor,
    load_user,
    manageable_doctor_ids,
    roles_from_capabilities,
    site_cookie_hash,
)
from tests.php_wp import WordPressPHP, random_salts, require_php, token_of
from wp_schema.ddl import create_site
from wp_schema.names import TableNames
from wp_schema.reflect import SiteSchema

pytestmark = pytest.mark.php

SITE_URL = "http://clinic.test"
USERS = [
    ("doc_one", "pw-doc-one", "kiviCare_doctor"),
    ("doc_two", "pw-doc-two", "kiviCare_doctor"),
    ("doc_three", "pw-doc-three", "kiviCare_doctor"),
    ("clinicboss", "pw-boss", "kiviCare_clinic_admin"),
    ("otherboss", "pw-other", "kiviCare_clinic_admin"),
    ("pat", "pw-pat", "kiviCare_patient"),
    ("recep", "pw-recep", "kiviCare_receptionist"),
    ("leaver", "pw-leaver", "kiviCare_doctor"),
    ("forgetful", "pw-forgetful", "kiviCare_doctor"),
    ("deleted", "pw-deleted", "kiviCare_doctor"),
]


@dataclass
class Site:
    wp: WordPressPHP
    engine: sa.Engine
    schema: Any
    ids: dict[str, int]
    cookies: dict[str, str]  # login → a valid cookie value minted by WordPress
    cookie_name: str

    def validator(self, clock: FakeClock | None = None, **overrides: Any) -> CookieValidator:
        kwargs: dict[str, Any] = {
            "keys": LoggedInKeys.from_constants(self.wp.salts),
            "cookie_hash": cookie_hash_for(SITE_URL),
            "clock": clock or now_clock(),
        }
        kwargs.update(overrides)
        return CookieValidator(self.engine, self.schema, **kwargs)


def now_clock() -> FakeClock:
    """Cookies minted by PHP carry real timestamps, so the fake clock starts at real now."""
    return FakeClock(datetime.fromtimestamp(int(time.time()), UTC))


@pytest.fixture(scope="module")
def site(new_mysql_database: Any) -> Any:
    require_php()
    url = new_mysql_database()
    wp = WordPressPHP(url, "wp_", random_salts(), SITE_URL)
    engine = sa.create_engine(url)
    try:
        admin_id = wp.install()
        names = TableNames("wp_")
        create_site(engine, names, core=False, kivicare="v4", mapping_shape="c")
        ids = dict(zip([u[0] for u in USERS], wp.create_users(USERS), strict=True))
        ids["admin"] = admin_id
        schema = SiteSchema.load(engine, names)
        with engine.begin() as conn:
            clinics = schema.clinics
            dcm = schema.doctor_clinic_mappings
            a = conn.execute(
                sa.insert(clinics).values(name="A", clinic_admin_id=ids["clinicboss"])
            ).inserted_primary_key[0]
            b = conn.execute(
                sa.insert(clinics).values(name="B", clinic_admin_id=ids["otherboss"])
            ).inserted_primary_key[0]
            conn.execute(
                sa.insert(dcm),
                [
                    {"doctor_id": ids["doc_one"], "clinic_id": a},
                    {"doctor_id": ids["doc_two"], "clinic_id": a},
                    {"doctor_id": ids["doc_two"], "clinic_id": b},
                    {"doctor_id": ids["doc_three"], "clinic_id": b},
                ],
            )
        logins = ["admin", "doc_one", "doc_two", "clinicboss", "pat", "leaver", "forgetful"]
        logins.append("deleted")
        minted = wp.mint_login_cookies([(ids[login], None, False) for login in logins])
        names_seen = {name for name, _ in minted}
        assert len(names_seen) == 1
        yield Site(
            wp,
            engine,
            schema,
            ids,
            {login: value for login, (_, value) in zip(logins, minted, strict=True)},
            names_seen.pop(),
        )
    finally:
        engine.dispose()
        wp.close()


# -- accepted -----------------------------------------------------------------------------


def test_wordpress_cookie_is_accepted_with_user_and_roles(site: Site) -> None:
    validator = site.validator()
    assert validator.cookie_name == site.cookie_name  # same name PHP sets: COOKIEHASH agrees

    user = validator.validate(site.cookies["doc_one"])

    assert user == WpUser(
        id=site.ids["doc_one"],
        login="doc_one",
        email="doc_one@example.test",
        display_name="Doc_One",
        roles=frozenset({"kiviCare_doctor"}),
    )
    admin = validator.validate(site.cookies["admin"])
    assert admin is not None and admin.roles == frozenset({"administrator"})


def test_cookie_hash_is_read_from_the_siteurl_option(site: Site) -> None:
    with site.engine.connect() as conn:
        assert site_cookie_hash(conn, site.schema) == cookie_hash_for(SITE_URL)
        # WP_SITEURL in wp-config.php wins, without its trailing slash (_config_wp_siteurl).
        assert site_cookie_hash(conn, site.schema, wp_siteurl="http://x.test/") == (
            cookie_hash_for("http://x.test")
        )


def test_remember_me_cookie_and_an_already_decoded_value_are_accepted(site: Site) -> None:
    [(_, value)] = site.wp.mint_login_cookies([(site.ids["doc_two"], None, True)])
    validator = site.validator()
    user = validator.validate(value)
    assert user is not None and user.id == site.ids["doc_two"]
    # A value a proxy already URL-decoded still validates ("|" is not special to PHP urldecode).
    assert validator.validate(unquote_plus(value)) == user


def test_expiry_follows_the_injected_clock_to_the_second(site: Site) -> None:
    value = site.cookies["doc_one"]
    expiration = int(unquote_plus(value).split("|")[1])
    clock = now_clock()
    validator = site.validator(clock)

    clock.set(datetime.fromtimestamp(expiration, UTC))  # WordPress: expired only when exp < now
    assert validator.validate(value) is not None
    clock.set(datetime.fromtimestamp(expiration + 1, UTC))
    assert validator.validate(value) is None


def test_our_verdicts_match_wordpress_on_the_same_cookies(site: Site) -> None:
    good = unquote_plus(site.cookies["pat"])
    login, exp, token, mac = good.split("|")
    other = unquote_plus(site.cookies["doc_two"]).split("|")
    candidates = [
        good,
        "|".join([login, str(int(exp) + 1), token, mac]),
        "|".join([login, exp, token[:-1] + ("A" if token[-1] != "A" else "B"), mac]),
        "|".join([login, exp, token, mac[:-1] + ("0" if mac[-1] != "0" else "1")]),
        "|".join(["doc_two", exp, token, mac]),
        "|".join([login, other[1], other[2], other[3]]),
        "|".join([login.upper(), exp, token, mac]),
        "|".join([login, exp, token, mac.upper()]),
        "",
        "a|b|c",
        good + "|x",
    ]
    ours = [site.validator().validate(quote_plus(c, safe="")) for c in candidates]
    theirs = site.wp.validate_cookies([quote_plus(c, safe="") for c in candidates])
    assert [u.id if u else 0 for u in ours] == theirs
    assert theirs[0] == site.ids["pat"] and theirs[1:] == [0] * (len(candidates) - 1)


# -- rejected -----------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["login", "expiration", "token", "hmac"])
def test_tampering_with_any_field_is_rejected(site: Site, field: str) -> None:
    parts = dict(
        zip(
            ["login", "expiration", "token", "hmac"],
            unquote_plus(site.cookies["doc_one"]).split("|"),
            strict=True,
        )
    )
    changed = {
        "login": "doc_two",
        "expiration": str(int(parts["expiration"]) - 1),
        "token": parts["token"][::-1],
        "hmac": parts["hmac"][::-1],
    }[field]
    parts[field] = changed
    assert site.validator().validate(quote_plus("|".join(parts.values()))) is None


def test_cookie_minted_with_a_past_expiration_is_rejected(site: Site) -> None:
    past = int(time.time()) - 60
    [(_, value)] = site.wp.mint_login_cookies([(site.ids["doc_three"], past, False)])
    assert site.validator().validate(value) is None


def test_logout_in_wordpress_rejects_that_session_only(site: Site) -> None:
    uid = site.ids["leaver"]
    [(_, second)] = site.wp.mint_login_cookies([(uid, None, False)])
    first = site.cookies["leaver"]
    validator = site.validator()
    assert validator.validate(first) is not None and validator.validate(second) is not None

    site.wp.logout(uid, token_of(first))
    assert validator.validate(first) is None
    assert validator.validate(second) is not None

    site.wp.destroy_all_sessions(uid)
    assert validator.validate(second) is None


def test_password_change_rejects_existing_cookies(site: Site) -> None:
    value = site.cookies["forgetful"]
    assert site.validator().validate(value) is not None
    site.wp.wp_set_password(site.ids["forgetful"], "a-new-password")
    assert site.validator().validate(value) is None


def test_deleted_user_is_rejected(site: Site) -> None:
    value = site.cookies["deleted"]
    assert site.validator().validate(value) is not None
    assert site.wp.wp_delete_user(site.ids["deleted"]) is True
    assert site.validator().validate(value) is None


def test_another_sites_keys_or_cookie_name_do_not_match(site: Site) -> None:
    foreign = site.validator(keys=LoggedInKeys.from_constants(random_salts()))
    assert foreign.validate(site.cookies["doc_one"]) is None
    other_site = site.validator(cookie_hash=cookie_hash_for("http://other-clinic.test"))
    assert other_site.cookie_name != site.cookie_name


@pytest.mark.parametrize(
    "value",
    [
        "",
        None,
        "|||",
        "a|b|c",
        "a|b|c|d|e",
        "doc_one|tomorrow|token|hmac",
        "doc_one|-5|token|hmac",
        "doc_one|1e30|token|hmac",
        "doc_one%7C99999999999999999999999%7Ctoken%7Chmac",
        "%FF%FE|9999999999|token|hmac",
        "%ZZ|%|%%|x",
        "doc_one|9999999999|token|" + "f" * 5000,
        "x" * 1_000_000,
        "\x00|\x00|\x00|\x00",
    ],
)
def test_malformed_values_are_refused_without_exceptions(
    site: Site, value: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="sidecar.wp_auth"):
        assert site.validator().validate(value) is None
    assert caplog.records, "the refusal reason is logged"
    if value:
        assert all(value[:20] not in r.getMessage() for r in caplog.records)


def test_refusal_log_never_contains_the_cookie(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    login, exp, token, mac = unquote_plus(site.cookies["doc_two"]).split("|")
    with caplog.at_level(logging.INFO, logger="sidecar.wp_auth"):
        site.validator().validate(quote_plus(f"{login}|{exp}|{token}|{mac[::-1]}"))
    text = caplog.text
    assert "bad hash" in text
    assert token not in text and mac[::-1] not in text and mac not in text


# -- keys as wp_salt() picks them --------------------------------------------------------


def test_sample_phrase_and_duplicated_keys_fall_back_to_site_options(site: Site) -> None:
    """Real WordPress with LOGGED_IN_KEY left at the sample phrase and LOGGED_IN_SALT equal to
    NONCE_SALT generates logged_in_key/logged_in_salt site options and signs with those."""
    salts = random_salts()
    salts["LOGGED_IN_KEY"] = SAMPLE_PHRASE
    salts["NONCE_SALT"] = salts["LOGGED_IN_SALT"]
    wp = WordPressPHP(site.wp.db, "wp_", salts, SITE_URL)  # same database
    try:
        [(_, value)] = wp.mint_login_cookies([(site.ids["doc_three"], None, False)])
    finally:
        wp.close()
    keys = LoggedInKeys.from_constants(salts)
    assert keys.key is None and keys.salt is None
    assert site.validator(keys=keys).validate(value) is not None
    # Taking the constants at face value, as a naive port would, signs differently.
    naive = LoggedInKeys(key=salts["LOGGED_IN_KEY"], salt=salts["LOGGED_IN_SALT"])
    assert site.validator(keys=naive).validate(value) is None


def test_secret_key_stands_in_for_a_missing_logged_in_key(site: Site) -> None:
    salts = random_salts()
    del salts["LOGGED_IN_KEY"]
    salts["SECRET_KEY"] = "s3cret-" + salts["AUTH_KEY"][::-1]
    wp = WordPressPHP(site.wp.db, "wp_", salts, SITE_URL)
    try:
        [(_, value)] = wp.mint_login_cookies([(site.ids["doc_three"], None, False)])
    finally:
        wp.close()
    keys = LoggedInKeys.from_constants(salts)
    assert keys.key == salts["SECRET_KEY"]
    assert site.validator(keys=keys).validate(value) is not None


def test_wp_salt_rules_for_constants() -> None:
    base = {"LOGGED_IN_KEY": "k1", "LOGGED_IN_SALT": "s1", "AUTH_KEY": "a1", "SECRET_SALT": "x"}
    assert LoggedInKeys.from_constants(base) == LoggedInKeys("k1", "s1")
    # The same value under another key/salt name disqualifies both uses of it.
    assert LoggedInKeys.from_constants({**base, "AUTH_KEY": "s1"}) == LoggedInKeys("k1", None)
    # Empty and "0" are falsy in PHP; SECRET_SALT never stands in for LOGGED_IN_SALT.
    assert LoggedInKeys.from_constants({**base, "LOGGED_IN_SALT": "0"}).salt is None
    assert LoggedInKeys.from_constants({**base, "LOGGED_IN_KEY": ""}).key is None
    missing = LoggedInKeys(None, "s1")
    assert missing.resolve({}) is None
    assert missing.resolve({"logged_in_key": "opt"}) == b"opts1"


def test_keys_from_settings_use_the_eight_wordpress_fields() -> None:
    @dataclass
    class WordPressSettings:  # the shape of Settings.wordpress
        auth_key: str = "a"
        logged_in_key: str = SAMPLE_PHRASE
        logged_in_salt: str = "salt"
        nonce_key: str = ""

    assert LoggedInKeys.from_settings(WordPressSettings()) == LoggedInKeys(None, "salt")


def test_keys_repr_hides_secrets() -> None:
    keys = LoggedInKeys(key="k-very-secret", salt="s-very-secret")
    assert "very-secret" not in repr(keys)


# -- roles and who manages whom -----------------------------------------------------------


def test_roles_are_capability_keys_that_are_registered_roles() -> None:
    caps = {"kiviCare_doctor": True, "edit_posts": True, "administrator": False}
    registered = frozenset({"administrator", "kiviCare_doctor"})
    assert roles_from_capabilities(caps, registered) == {"kiviCare_doctor", "administrator"}
    assert roles_from_capabilities("garbage", registered) == frozenset()


def test_who_may_manage_which_doctor(site: Site) -> None:
    ids = site.ids
    validator = site.validator()
    admin = validator.validate(site.cookies["admin"])
    boss = validator.validate(site.cookies["clinicboss"])
    doctor = validator.validate(site.cookies["doc_one"])
    patient = validator.validate(site.cookies["pat"])
    assert admin and boss and doctor and patient
    assert patient.roles == {"kiviCare_patient"} and boss.roles == {"kiviCare_clinic_admin"}
    with site.engine.connect() as conn:
        recep = load_user(conn, site.schema, ids["recep"])
        assert recep is not None

        def can(user: WpUser, login: str) -> bool:
            return can_manage_doctor(conn, site.schema, user, ids[login])

        assert can(admin, "doc_one") and can(admin, "doc_three")
        assert can(doctor, "doc_one") and not can(doctor, "doc_two")
        assert can(boss, "doc_one") and can(boss, "doc_two") and not can(boss, "doc_three")
        assert not can(patient, "doc_one") and not can(recep, "doc_one")

        assert manageable_doctor_ids(conn, site.schema, boss) == {ids["doc_one"], ids["doc_two"]}
        assert manageable_doctor_ids(conn, site.schema, doctor) == {ids["doc_one"]}
        assert manageable_doctor_ids(conn, site.schema, patient) == set()
        all_doctors = manageable_doctor_ids(conn, site.schema, admin)
        assert {ids["doc_one"], ids["doc_two"], ids["doc_three"]} <= all_doctors
        assert ids["pat"] not in all_doctors and ids["clinicboss"] not in all_doctors

        assert is_doctor(conn, site.schema, ids["doc_two"])
        assert not is_doctor(conn, site.schema, ids["pat"])
        assert not is_doctor(conn, site.schema, ids["admin"])
