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
