"""Secrets at rest: Fernet encryption and keyed hashes.

Two kinds of secret live in the database:

* **Recoverable secrets** (Twilio auth tokens, the webhook-signing copy of a key secret) are
  encrypted with Fernet (AES-128-CBC + HMAC-SHA256) under the operator's encryption key.
* **API key secrets** are only ever *checked*, so they are stored as a keyed hash:
  HMAC-SHA256 with a server pepper derived from the encryption key. A stolen database alone
  cannot be used to test guesses offline.

The key comes from ``Settings.encryption_key``. In ``dev_mode`` with no key, one is generated
once and kept in ``var_dir/encryption.key`` (mode 0600) so restarts can still read old data.
Changing the key makes existing tokens unreadable and existing API keys invalid.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from nixflex_engine.config import Settings

__all__ = [
    "Crypto",
    "CryptoError",
    "DecryptionError",
    "load_or_create_key",
    "new_key_id",
    "new_key_secret",
]

KEY_FILE_NAME = "encryption.key"
_PEPPER_LABEL = b"nixflex-engine/api-key-pepper/v1"


class CryptoError(RuntimeError):
    """The encryption key is missing or malformed."""


class DecryptionError(ValueError):
    """A ciphertext could not be decrypted with the current key (tampered, or key changed)."""


def load_or_create_key(settings: Settings) -> bytes:
    """The Fernet key from settings, or (dev mode only) from / into ``var_dir``."""
    if settings.encryption_key is not None and settings.encryption_key.get_secret_value():
        key = settings.encryption_key.get_secret_value().strip().encode("ascii")
        _check_key(key)
        return key
    if not settings.dev_mode:
        raise CryptoError(
            "NIXFLEX_ENCRYPTION_KEY is required outside dev mode. Generate one with: python -c "
            '"from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
        )
    path = Path(settings.var_dir) / KEY_FILE_NAME
    if path.exists():
        key = path.read_bytes().strip()
        _check_key(key)
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    # O_EXCL: if two processes start at once, exactly one writes the key; the other reads it.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes().strip()
        _check_key(key)
        return key
    with os.fdopen(fd, "wb") as fh:
        fh.write(key + b"\n")
    return key


def _check_key(key: bytes) -> None:
    try:
        Fernet(key)
    except (ValueError, TypeError) as exc:
        raise CryptoError("the encryption key is not a valid Fernet key") from exc


class Crypto:
    """Encrypts, decrypts and hashes secrets with one server key."""

    __slots__ = ("_fernet", "_pepper")

    def __init__(self, key: bytes) -> None:
        _check_key(key)
        self._fernet = Fernet(key)
        self._pepper = hmac.new(key, _PEPPER_LABEL, hashlib.sha256).digest()

    @classmethod
    def from_settings(cls, settings: Settings) -> Crypto:
        return cls(load_or_create_key(settings))

    def encrypt(self, plaintext: str) -> str:
        """Fernet token (ASCII) for ``plaintext``."""
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, ValueError) as exc:
            raise DecryptionError("ciphertext cannot be decrypted with the current key") from exc

    def hash_secret(self, secret: str) -> str:
        """Keyed hash (hex) of an API key secret."""
        return hmac.new(self._pepper, secret.encode("utf-8"), hashlib.sha256).hexdigest()

    def verify_secret(self, secret: str, expected_hash: str) -> bool:
        """Constant-time check of ``secret`` against a stored :meth:`hash_secret` value."""
        return hmac.compare_digest(self.hash_secret(secret), expected_hash)


def new_key_id() -> str:
    """A public key id: ``nxf_`` + 24 hex characters."""
    return "nxf_" + secrets.token_hex(12)


def new_key_secret() -> str:
    """A key secret: ``nxfs_`` + 48 hex characters (192 bits)."""
    return "nxfs_" + secrets.token_hex(24)
