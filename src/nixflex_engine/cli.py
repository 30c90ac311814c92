"""The ``nixflex-engine`` command.

::

    nixflex-engine serve [--host H] [--port P]
    nixflex-engine keys create --name NAME [--max-concurrent-calls N] [--json]
    nixflex-engine db upgrade

Subcommands are registered by the functions in :data:`SUBCOMMANDS`: each receives the
``argparse`` sub-parsers object, adds its parser(s) and sets ``handler`` — a function
``(args, settings) -> exit code``. To add a command (``sandbox``, ``demo`` ...), write such a
function (in your own module if you like) and append it to :data:`SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Sequence

from nixflex_engine.calls.dialer import Dialer
from nixflex_engine.config import Settings
from nixflex_engine.log import configure_logging

__all__ = ["SUBCOMMANDS", "build_parser", "main"]

Handler = Callable[[argparse.Namespace, Settings], int]
Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


# --- serve --------------------------------------------------------------------------------


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from nixflex_engine.server import create_app

    host = args.host or settings.host
    port = settings.port if args.port is None else args.port
    app = create_app(settings, dialer=build_dialer(settings))
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)
    return 0


def build_dialer(settings: Settings) -> Dialer | None:
    """The carrier dialer ``serve`` uses. The Twilio dialer is wired here by the dialing issue;
    until then ``serve`` runs without one and outbound calls answer 502
    ``outbound_failed`` / ``dialer_not_configured``."""
    return None


def register_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("serve", help="Run the engine's HTTP server under uvicorn.")
    parser.add_argument("--host", default=None, help="Interface to bind (default: settings).")
    parser.add_argument("--port", type=int, default=None, help="Port (default: settings).")
    parser.set_defaults(handler=_serve)


# --- keys ---------------------------------------------------------------------------------


async def _create_key(settings: Settings, name: str, limit: int | None) -> dict[str, str]:
    from nixflex_engine.api.keys import create_account_key
    from nixflex_engine.crypto import Crypto
    from nixflex_engine.store.db import Database, upgrade
    from nixflex_engine.store.repositories import Repositories

    db = Database(settings.database_url)
    try:
        await upgrade(db)
        key = await create_account_key(
            Repositories.over(db),
            Crypto.from_settings(settings),
            name=name,
            max_concurrent_calls=limit,
        )
    finally:
        await db.dispose()
    return {"key_id": key.key_id, "key_secret": key.key_secret, "account_id": key.account_id}


def _keys_create(args: argparse.Namespace, settings: Settings) -> int:
    if args.max_concurrent_calls is not None and args.max_concurrent_calls < 1:
        print("--max-concurrent-calls must be at least 1", file=sys.stderr)
        return 2
    created = asyncio.run(_create_key(settings, args.name, args.max_concurrent_calls))
    if args.json:
        print(json.dumps({"key_id": created["key_id"], "key_secret": created["key_secret"]}))
    else:
        print(f"key_id:     {created['key_id']}")
        print(f"key_secret: {created['key_secret']}   (shown once; store it now)")
        print(f"api key:    {created['key_id']}:{created['key_secret']}")
    return 0


def register_keys(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="Manage accounts and API keys.")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="Create an account and its API key.")
    create.add_argument("--name", required=True, help="Account / key name.")
    create.add_argument(
        "--max-concurrent-calls", type=int, default=None, help="Calls in flight allowed."
    )
    create.add_argument("--json", action="store_true", help='Print {"key_id","key_secret"}.')
    create.set_defaults(handler=_keys_create)


# --- db -----------------------------------------------------------------------------------


async def _upgrade(settings: Settings) -> None:
    from nixflex_engine.store.db import Database, upgrade

    db = Database(settings.database_url)
    try:
        await upgrade(db)
    finally:
        await db.dispose()


def _db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    asyncio.run(_upgrade(settings))
    print("database is at the latest migration")
    return 0


def register_db(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = sub.add_parser("db", help="Database maintenance.")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="Apply all migrations.").set_defaults(handler=_db_upgrade)


# ------------------------------------------------------------------------------------------

SUBCOMMANDS: tuple[Registrar, ...] = (register_serve, register_keys, register_db)


def build_parser(registrars: Sequence[Registrar] = SUBCOMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nixflex-engine", description="Self-hostable engine that places AI phone calls."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for register in registrars:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()  # type: ignore[call-arg]  # values come from the environment
    configure_logging(settings.log_level)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per migration is noise
    handler: Handler = args.handler
    return handler(args, settings)


if __name__ == "__main__":
    sys.exit(main())
