"""create_app takes the reconciliation thresholds and the webhook retention from the settings
(explicit create_app arguments still win, for tests and embedders)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from nixflex_engine import server
from nixflex_engine.calls.session import CallSessions
from nixflex_engine.calls.webhooks import WebhookWorker
from nixflex_engine.config import Settings


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'engine.db'}",
        encryption_key=Fernet.generate_key().decode(),
        var_dir=tmp_path / "var",
        recordings_dir=tmp_path / "recordings",
        public_base_url="https://engine.example.com",
        campaign_dispatch_enabled=False,
        **overrides,
    )


async def _started(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, **app_kwargs: Any
) -> dict[str, dict[str, Any]]:
    """Run the app's start-up and shutdown; return the arguments its sessions and webhook
    worker were built with."""
    seen: dict[str, dict[str, Any]] = {}

    class Sessions(CallSessions):
        def __init__(self, **kwargs: Any) -> None:
            seen["sessions"] = kwargs
            super().__init__(**kwargs)

    class Worker(WebhookWorker):
        def __init__(self, **kwargs: Any) -> None:
            seen["webhooks"] = kwargs
            super().__init__(**kwargs)

    monkeypatch.setattr(server, "CallSessions", Sessions)
    monkeypatch.setattr(server, "WebhookWorker", Worker)
    app = server.create_app(settings, analysis=False, **app_kwargs)
    async with app.router.lifespan_context(app):
        assert isinstance(app.state.sessions, Sessions)
        assert isinstance(app.state.webhooks, Worker)
    return seen


async def test_create_app_uses_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(
        tmp_path,
        reconcile_stale_after_seconds=7.0,
        reconcile_ringing_after_seconds=45.0,
        webhook_retention_days=3,
    )
    seen = await _started(settings, monkeypatch)
    assert seen["sessions"]["stale_after_s"] == 7.0
    assert seen["sessions"]["ring_stale_after_s"] == 45.0
    assert seen["webhooks"]["retention_s"] == 3 * 86400.0


async def test_create_app_defaults_and_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = await _started(_settings(tmp_path), monkeypatch)
    assert (seen["sessions"]["stale_after_s"], seen["sessions"]["ring_stale_after_s"]) == (
        30.0,
        150.0,
    )
    assert seen["webhooks"]["retention_s"] == 30 * 86400.0
    # explicit arguments win over the settings; retention 0 reaches the worker as 0 (off)
    settings = _settings(
        tmp_path,
        reconcile_stale_after_seconds=7.0,
        reconcile_ringing_after_seconds=45.0,
        webhook_retention_days=0,
    )
    seen = await _started(
        settings, monkeypatch, reconcile_stale_after_s=0.5, reconcile_ringing_after_s=0.75
    )
    assert (seen["sessions"]["stale_after_s"], seen["sessions"]["ring_stale_after_s"]) == (
        0.5,
        0.75,
    )
    assert seen["webhooks"]["retention_s"] == 0.0
    # one explicit argument: the other still comes from the settings
    seen = await _started(settings, monkeypatch, reconcile_ringing_after_s=99.0)
    assert (seen["sessions"]["stale_after_s"], seen["sessions"]["ring_stale_after_s"]) == (
        7.0,
        99.0,
    )
