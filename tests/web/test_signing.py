"""Signed tokens and single-use nonces (sidecar.signing) against a real MariaDB."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from sidecar.signing import (
    PURPOSE_CSRF,
    PURPOSE_INVITE,
    PURPOSE_OAUTH,
    NonceStore,
    Signer,
    TokenError,
)
from wp_schema.names import TableNames

SECRET = "0123456789abcdef-test-secret"


def test_round_trip_carries_claims() -> None:
    signer = Signer(SECRET)
    token = signer.sign(PURPOSE_OAUTH, {"n": "abc", "d": 7}, expires_at=1000)
    assert signer.verify(PURPOSE_OAUTH, token, now=999) == {"n": "abc", "d": 7, "exp": 1000}


def test_expired_token_rejected() -> None:
    signer = Signer(SECRET)
    token = signer.sign(PURPOSE_OAUTH, {"n": "abc"}, expires_at=1000)
    with pytest.raises(TokenError) as err:
        signer.verify(PURPOSE_OAUTH, token, now=1000)
    assert err.value.reason == "expired"


def test_purpose_is_part_of_the_key() -> None:
    signer = Signer(SECRET)
    csrf = signer.sign(PURPOSE_CSRF, {"s": "x"}, expires_at=1000)
    with pytest.raises(TokenError) as err:
        signer.verify(PURPOSE_INVITE, csrf, now=1)
    assert err.value.reason == "signature"


def test_other_secret_rejected() -> None:
    token = Signer("another-secret-of-16+chars").sign(PURPOSE_OAUTH, {}, expires_at=1000)
    with pytest.raises(TokenError) as err:
        Signer(SECRET).verify(PURPOSE_OAUTH, token, now=1)
    assert err.value.reason == "signature"


@pytest.mark.parametrize("mutate", [
    lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),   # mac changed
    lambda t: ("f" if t[0] != "f" else "g") + t[1:],      # payload changed
    lambda t: t.replace(".", ""),                         # structure gone
    lambda t: t + "." + t,                                # extra parts
    lambda t: "",                                         # missing
    lambda t: "x" * 5000,                                 # oversized
    lambda t: "@@@." + t.split(".")[1],                   # not base64url
])
def test_tampered_tokens_rejected(mutate) -> None:
    signer = Signer(SECRET)
    token = signer.sign(PURPOSE_OAUTH, {"n": "abc", "d": 7}, expires_at=1000)
    with pytest.raises(TokenError) as err:
        signer.verify(PURPOSE_OAUTH, mutate(token), now=1)
    assert err.value.reason in {"signature", "malformed"}


def test_mac_is_not_malleable() -> None:
    # 32 bytes in 43 base64 characters leave 2 spare bits in the last one: flipping them must
    # not give a second valid spelling of the same token.
    signer = Signer(SECRET)
    token = signer.sign(PURPOSE_OAUTH, {"n": "abc"}, expires_at=1000)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(token[-1])
    for spare in (1, 2, 3):
        twin = token[:-1] + alphabet[last ^ spare]
        with pytest.raises(TokenError):
            signer.verify(PURPOSE_OAUTH, twin, now=1)


def test_forged_payload_with_valid_structure_rejected() -> None:
    signer = Signer(SECRET)
    token = signer.sign(PURPOSE_OAUTH, {"d": 7}, expires_at=1000)
    other = signer.sign(PURPOSE_OAUTH, {"d": 8}, expires_at=1000)
    spliced = other.split(".")[0] + "." + token.split(".")[1]
    with pytest.raises(TokenError):
        signer.verify(PURPOSE_OAUTH, spliced, now=1)


def test_short_secret_refused() -> None:
    with pytest.raises(ValueError, match="secret_key"):
        Signer("short")


@pytest.fixture(scope="module")
def store_engine(new_mysql_database) -> Iterator[sa.Engine]:
    engine = sa.create_engine(new_mysql_database())
    NonceStore(TableNames()).ensure_table(engine)
    NonceStore(TableNames()).ensure_table(engine)  # idempotent
    yield engine
    engine.dispose()


def test_nonce_is_single_use(store_engine) -> None:
    store = NonceStore(TableNames())
    with store_engine.begin() as conn:
        nonce = store.issue(conn, purpose=PURPOSE_OAUTH, doctor_id=5, wp_user_id=9, now=100,
                            expires_at=700, code_verifier="v" * 50, return_to="/me")
    with store_engine.begin() as conn:
        record = store.consume(conn, nonce, PURPOSE_OAUTH, now=200)
    assert (record.doctor_id, record.wp_user_id, record.code_verifier) == (5, 9, "v" * 50)
    with store_engine.begin() as conn, pytest.raises(TokenError) as err:
        store.consume(conn, nonce, PURPOSE_OAUTH, now=201)
    assert err.value.reason == "used"
    with store_engine.connect() as conn:
        assert store.get(conn, nonce, PURPOSE_OAUTH).used_at == 200


def test_nonce_expires_and_is_scoped_to_purpose(store_engine) -> None:
    store = NonceStore(TableNames())
    with store_engine.begin() as conn:
        nonce = store.issue(conn, purpose=PURPOSE_INVITE, doctor_id=5, now=100, expires_at=700)
    with store_engine.begin() as conn, pytest.raises(TokenError) as err:
        store.consume(conn, nonce, PURPOSE_OAUTH, now=200)
    assert err.value.reason == "used"
    with store_engine.begin() as conn, pytest.raises(TokenError) as err:
        store.consume(conn, nonce, PURPOSE_INVITE, now=700)
    assert err.value.reason == "expired"
    with store_engine.begin() as conn:
        fresh = store.issue(conn, purpose=PURPOSE_INVITE, doctor_id=5, now=100,
                            expires_at=700 + 86401)
        assert store.purge(conn, now=700 + 86401) >= 1
        assert store.get(conn, nonce, PURPOSE_INVITE) is None
        assert store.get(conn, fresh, PURPOSE_INVITE) is not None
