import pytest
from pydantic import ValidationError

from nixflex_engine.config import Settings


def test_env_prefix_and_ws_scheme(monkeypatch):
    monkeypatch.setenv("NIXFLEX_PUBLIC_BASE_URL", "https://engine.example.com/")
    s = Settings()
    assert s.public_base_url == "https://engine.example.com"
    assert s.public_ws_base_url == "wss://engine.example.com"


def test_secrets_never_print(monkeypatch):
    monkeypatch.setenv("NIXFLEX_ANTHROPIC_API_KEY", "sk-very-secret")
    s = Settings()
    assert "sk-very-secret" not in repr(s)
    assert s.anthropic_api_key.get_secret_value() == "sk-very-secret"


def test_webhook_retention_and_reconcile_defaults(monkeypatch):
    s = Settings()
    assert s.webhook_retention_days == 30
    assert (s.reconcile_stale_after_seconds, s.reconcile_ringing_after_seconds) == (30.0, 150.0)
    monkeypatch.setenv("NIXFLEX_WEBHOOK_RETENTION_DAYS", "0")
    monkeypatch.setenv("NIXFLEX_RECONCILE_STALE_AFTER_SECONDS", "12.5")
    monkeypatch.setenv("NIXFLEX_RECONCILE_RINGING_AFTER_SECONDS", "90")
    s = Settings()
    assert s.webhook_retention_days == 0  # keep forever
    assert (s.reconcile_stale_after_seconds, s.reconcile_ringing_after_seconds) == (12.5, 90.0)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NIXFLEX_WEBHOOK_RETENTION_DAYS": "-1"}, "webhook_retention_days"),
        ({"NIXFLEX_WEBHOOK_RETENTION_DAYS": "1.5"}, "webhook_retention_days"),
        ({"NIXFLEX_RECONCILE_STALE_AFTER_SECONDS": "0"}, "reconcile_stale_after_seconds"),
        ({"NIXFLEX_RECONCILE_RINGING_AFTER_SECONDS": "-5"}, "reconcile_ringing_after_seconds"),
        (
            {"NIXFLEX_RECONCILE_STALE_AFTER_SECONDS": "200"},
            r"reconcile_ringing_after_seconds \(150\) must be at least "
            r"reconcile_stale_after_seconds \(200\)",
        ),
        (
            {
                "NIXFLEX_RECONCILE_STALE_AFTER_SECONDS": "60",
                "NIXFLEX_RECONCILE_RINGING_AFTER_SECONDS": "59.5",
            },
            r"reconcile_ringing_after_seconds \(59.5\) must be at least",
        ),
    ],
)
def test_retention_and_reconcile_are_validated(monkeypatch, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=message):
        Settings()


def test_equal_reconcile_thresholds_are_allowed():
    s = Settings(reconcile_stale_after_seconds=0.5, reconcile_ringing_after_seconds=0.5)
    assert s.reconcile_ringing_after_seconds == s.reconcile_stale_after_seconds
