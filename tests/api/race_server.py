"""A standalone engine process for the multi-process race test.

Settings come from the environment (``NIXFLEX_*``); the dialer is the in-memory
``InstantDialer`` with a small delay so requests overlap. Usage: ``python race_server.py PORT``.
"""

from __future__ import annotations

import sys

import uvicorn

from nixflex_engine.calls.dialer import InstantDialer
from nixflex_engine.config import Settings
from nixflex_engine.server import create_app


def main() -> None:
    port = int(sys.argv[1])
    app = create_app(Settings(), dialer=InstantDialer(delay_seconds=0.005))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
