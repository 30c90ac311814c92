"""Encryption at rest and keyed hashes."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from nixflex_engine.config import Settings
from nixflex_engine.crypto import (
    Crypto,
    CryptoError,
    DecryptionError,
    load_or_create_key,
    new_key_id,
    new_key_secret,
)


def test_encrypt_round_trip_and_tamper_detection() -> None:
    crypto = Crypto(Fernet.generate_key())
    token = crypto.encrypt("auth-token-123 ✓")
    assert "auth-token-123" not in token
    assert crypto.decrypt(token) == "auth-token-123 ✓"
    with pytest.raises(DecryptionError):
        crypto.decrypt(token[:-4] + "AAAA")
    with pytest.raises(DecryptionError):
        Crypto(Fernet.generate_key()).decrypt(token)


def test_keyed_hash_depends_on_the_server_key() -> None:
    a, b = Crypto(Fernet.generate_key()), Crypto(Fernet.generate_key())
    secret = new_key_secret()
    assert a.verify_secret(secret, a.hash_secret(secret))
    assert not a.verify_secret(secret + "x", a.hash_secret(secret))
    assert a.hash_secret(secret) != b.hash_secret(secret)
    assert secret not in a.hash_secret(secret)
    assert new_key_id().startswith("nxf_") and secret.startswith("nxfs_")


def test_key_required_outside_dev_mode(tmp_path: Path) -> None:
    with pytest.raises(CryptoError):
        load_or_create_key(Settings(var_dir=tmp_path, dev_mode=False, encryption_key=None))
    with pytest.raises(CryptoError):
        load_or_create_key(Settings(var_dir=tmp_path, encryption_key="not-a-key"))


def test_dev_mode_generates_and_keeps_a_key(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path / "var", dev_mode=True, encryption_key=None)
    first = load_or_create_key(settings)
    path = tmp_path / "var" / "encryption.key"
    assert path.exists() and (path.stat().st_mode & 0o777) == 0o600
    assert load_or_create_key(settings) == first
    token = Crypto(first).encrypt("x")
    assert Crypto(load_or_create_key(settings)).decrypt(token) == "x"


def test_configured_key_wins(tmp_path: Path) -> None:
    key = Fernet.generate_key()
    settings = Settings(var_dir=tmp_path, dev_mode=True, encryption_key=key.decode())
    assert load_or_create_key(settings) == key
    assert not (tmp_path / "encryption.key").exists()
