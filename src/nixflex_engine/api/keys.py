"""Accounts and API keys: ``POST /v1/keys`` (sign-up) and ``POST /v1/keys/rotate``.

:func:`create_account_key` is also what ``nixflex-engine keys create`` runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.routing import Route

from nixflex_engine.api.errors import ApiError
from nixflex_engine.api.fields import check_int, check_string, reject_unknown
from nixflex_engine.api.routing import ApiCall, Reply, endpoint
from nixflex_engine.crypto import Crypto, new_key_id, new_key_secret
from nixflex_engine.store.repositories import Repositories

__all__ = ["NewKey", "create_account_key", "routes"]


@dataclass(slots=True, frozen=True)
class NewKey:
    account_id: str
    key_id: str
    key_secret: str

    def as_json(self) -> dict[str, str]:
        return {"key_id": self.key_id, "key_secret": self.key_secret}


async def create_account_key(
    repos: Repositories, crypto: Crypto, *, name: str, max_concurrent_calls: int | None = None
) -> NewKey:
    """Create an account with one API key; the secret is returned here and never again."""
    key_id, secret = new_key_id(), new_key_secret()
    account = await repos.accounts.create_with_key(
        name=name,
        key_id=key_id,
        secret_hash=crypto.hash_secret(secret),
        secret_encrypted=crypto.encrypt(secret),
        max_concurrent_calls=max_concurrent_calls,
    )
    return NewKey(account.account_id, key_id, secret)


async def create_key(call: ApiCall) -> Reply:
    """Create an account and key (only when the operator enabled sign-up)."""
    services = call.services
    if not services.settings.signup_enabled:
        raise ApiError(
            403,
            "signup_disabled",
            "Sign-up is disabled on this server; ask the operator for a key "
            "(nixflex-engine keys create).",
        )
    body = await call.json_object(allow_empty=True)
    reject_unknown(body, {"name", "max_concurrent_calls"})
    name = check_string("name", body.get("name", "default"), max_length=200, min_length=1)
    limit = body.get("max_concurrent_calls")
    if limit is not None:
        limit = check_int("max_concurrent_calls", limit, minimum=1, maximum=10_000)
    assert name is not None
    key = await create_account_key(
        services.repos, services.crypto, name=name, max_concurrent_calls=limit
    )
    return Reply(201, key.as_json())


async def rotate_key(call: ApiCall) -> Reply:
    """A new secret for the calling key; the old secret fails from now on."""
    services = call.services
    assert call.auth is not None
    secret = new_key_secret()
    rotated = await services.repos.accounts.rotate_key(
        call.auth.key_id,
        secret_hash=services.crypto.hash_secret(secret),
        secret_encrypted=services.crypto.encrypt(secret),
    )
    services.auth_cache.invalidate(call.auth.key_id)
    if not rotated:
        raise ApiError(401, "invalid_api_key", "Invalid API key.")
    return Reply(200, {"key_id": call.auth.key_id, "key_secret": secret})


def routes() -> list[Route]:
    return [
        Route("/v1/keys", endpoint(create_key, authenticated=False), methods=["POST"]),
        Route("/v1/keys/rotate", endpoint(rotate_key, idempotent=False), methods=["POST"]),
    ]
