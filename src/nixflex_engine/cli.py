"""The ``nixflex-engine`` command.

::

    nixflex-engine serve [--host H] [--port P]
    nixflex-engine keys create --name NAME [--max-concurrent-calls N] [--json]
    nixflex-engine db upgrade
    nixflex-engine sandbox [--port P] [--scripts FILE] [--twilio-account SID:TOKEN] ...

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
    app = create_app(settings, dialer=build_dialer(settings), close_dialer=True)
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)
    return 0


def build_dialer(settings: Settings) -> Dialer | None:
    """The carrier dialer ``serve`` uses: Twilio, at ``twilio_api_base_url`` when set (the
    sandbox carrier), else Twilio's own API."""
    from nixflex_engine.calls.twilio_dialer import TwilioDialer

    return TwilioDialer(settings)


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


# --- sandbox ------------------------------------------------------------------------------


def _sandbox(args: argparse.Namespace, settings: Settings) -> int:
    from nixflex_engine.sandbox.carrier import run_sandbox

    bad = [item for item in args.map_url if "=" not in item]
    if bad:
        print(f"--map-url wants PUBLIC=LOCAL, got {bad[0]!r}", file=sys.stderr)
        return 2
    url_map = dict(item.split("=", 1) for item in args.map_url)
    return run_sandbox(
        host=args.host,
        port=args.port,
        speed=args.speed,
        scripts_path=args.scripts,
        accounts=args.twilio_account,
        numbers=args.twilio_number,
        url_map=url_map,
    )


def register_sandbox(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sandbox",
        help="Serve fake Twilio (a carrier that plays each call), Deepgram and Anthropic on "
        "one port; point the engine's *_base_url settings at it.",
    )
    p.add_argument("--host", default="127.0.0.1", help="Interface to bind.")
    p.add_argument("--port", type=int, default=8099, help="Port to bind.")
    p.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="Carrier and callee clock multiplier (keep 1 with a real engine: its playout "
        "runs in real time).",
    )
    p.add_argument("--scripts", default=None, help="JSON file of per-number call scripts.")
    p.add_argument(
        "--twilio-account",
        action="append",
        default=[],
        metavar="SID:TOKEN",
        help="A Twilio account the fake knows (repeatable; default: one generated, printed).",
    )
    p.add_argument(
        "--twilio-number",
        action="append",
        default=[],
        metavar="+E164",
        help="A number owned by the first account (repeatable).",
    )
    p.add_argument(
        "--map-url",
        action="append",
        default=[],
        metavar="PUBLIC=LOCAL",
        help="Send requests for a public URL prefix to a local one (repeatable).",
    )
    p.set_defaults(handler=_sandbox)


# ------------------------------------------------------------------------------------------

SUBCOMMANDS: tuple[Registrar, ...] = (register_serve, register_keys, register_db, register_sandbox)


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
