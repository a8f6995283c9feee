"""Settings: sources, precedence, and errors that name the variable and what is allowed."""

import tomllib
from decimal import Decimal
from pathlib import Path

import pytest

from pipeline.errors import SettingsError
from pipeline.pricing import PriceBasis
from pipeline.settings import Settings, load_settings, setting_names
from pipeline.sync_modes import SyncMode

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """Each test starts without any lipdub variable from the machine."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("LIPDUB_") or name == "WAVESPEED_API_KEY":
            monkeypatch.delenv(name)


def test_defaults_are_the_safe_ones():
    settings = load_settings()
    assert settings.provider.base_url == "https://api.wavespeed.ai"
    assert settings.provider.model_path == "sync/lipsync-3"
    assert settings.provider.api_key is None
    assert settings.price.rate_per_second_usd == Decimal("0.134")
    assert settings.price.basis is PriceBasis.INPUT_VIDEO
    assert settings.polling.first_poll_min_s >= 5
    assert settings.batch.default_sync_mode is SyncMode.CUT_OFF


def test_nested_environment_variables(monkeypatch):
    monkeypatch.setenv("LIPDUB_PROVIDER__STARTS_PER_MINUTE", "500")
    monkeypatch.setenv("LIPDUB_STORAGE__BUCKET", "catalog")
    monkeypatch.setenv("LIPDUB_PRICE__BASIS", "expected_output")
    monkeypatch.setenv("LIPDUB_BUDGET__BATCH_USD", "25.50")
    settings = load_settings()
    assert settings.provider.starts_per_minute == 500
    assert settings.storage.bucket == "catalog"
    assert settings.price.basis is PriceBasis.EXPECTED_OUTPUT
    assert settings.budget.batch_usd == Decimal("25.50")


def test_wavespeed_api_key_is_accepted_and_lipdub_variable_wins(monkeypatch):
    monkeypatch.setenv("WAVESPEED_API_KEY", "from-sdk-variable")
    assert load_settings().provider.api_key.get_secret_value() == "from-sdk-variable"
    monkeypatch.setenv("LIPDUB_PROVIDER__API_KEY", "from-lipdub-variable")
    assert load_settings().provider.api_key.get_secret_value() == "from-lipdub-variable"


def test_the_key_never_shows_in_repr(monkeypatch):
    monkeypatch.setenv("WAVESPEED_API_KEY", "sk-very-secret")
    settings = load_settings()
    assert "sk-very-secret" not in repr(settings)
    assert "sk-very-secret" not in str(settings.model_dump())


def test_unknown_variable_is_named_with_a_suggestion(monkeypatch):
    monkeypatch.setenv("LIPDUB_PROVIDER__BASEURL", "https://x")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "LIPDUB_PROVIDER__BASEURL" in message
    assert "LIPDUB_PROVIDER__BASE_URL" in message


def test_invalid_values_name_the_variable_and_what_is_allowed(monkeypatch):
    monkeypatch.setenv("LIPDUB_POLLING__GROWTH_FACTOR", "9")
    monkeypatch.setenv("LIPDUB_BATCH__DEFAULT_SYNC_MODE", "bouce")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "LIPDUB_POLLING__GROWTH_FACTOR" in message and "less than or equal to 4" in message
    assert "LIPDUB_BATCH__DEFAULT_SYNC_MODE" in message and "'bounce'" in message


def test_an_invalid_key_value_is_never_echoed():
    with pytest.raises(SettingsError) as caught:
        load_settings(provider={"api_key": 987654321})
    assert "LIPDUB_PROVIDER__API_KEY" in str(caught.value)
    assert "987654321" not in str(caught.value)


def test_config_file_is_read_and_environment_wins(monkeypatch, tmp_path):
    config = tmp_path / "lipdub.toml"
    config.write_text('[storage]\nbucket = "from-file"\nregion = "eu-west-1"\n')
    monkeypatch.setenv("LIPDUB_CONFIG_FILE", str(config))
    monkeypatch.setenv("LIPDUB_STORAGE__BUCKET", "from-env")
    settings = load_settings()
    assert settings.storage.bucket == "from-env"
    assert settings.storage.region == "eu-west-1"


def test_unknown_key_in_the_config_file_is_refused(monkeypatch, tmp_path):
    config = tmp_path / "lipdub.toml"
    config.write_text("[storage]\nbukket = 'x'\n")
    monkeypatch.setenv("LIPDUB_CONFIG_FILE", str(config))
    with pytest.raises(SettingsError, match="LIPDUB_STORAGE__BUKKET: not a lipdub setting"):
        load_settings()


def test_missing_config_file_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("LIPDUB_CONFIG_FILE", str(tmp_path / "nope.toml"))
    with pytest.raises(SettingsError, match="LIPDUB_CONFIG_FILE"):
        load_settings()


def test_shipped_config_file_holds_exactly_the_defaults(monkeypatch):
    # configs/lipdub.toml documents every setting; loading it must change nothing.
    path = ROOT / "configs" / "lipdub.toml"
    monkeypatch.setenv("LIPDUB_CONFIG_FILE", str(path))
    assert load_settings() == Settings()
    listed = {
        (section, key)
        for section, table in tomllib.loads(path.read_text()).items()
        for key in table
    }
    commented = {
        (section, line[2:].split(" =")[0])
        for section in Settings.model_fields
        for line in path.read_text().split(f"[{section}]")[1].split("\n[")[0].splitlines()
        if line.startswith("# ") and " = (unset)" in line
    }
    assert listed | commented == set(setting_names().values())


def test_env_example_lists_every_variable():
    text = (ROOT / "configs" / ".env.example").read_text()
    for name in setting_names():
        assert f"{name}=" in text, name


def test_polls_closer_than_five_seconds_only_for_a_local_sandbox(monkeypatch):
    monkeypatch.setenv("LIPDUB_POLLING__FIRST_POLL_MIN_S", "2")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "LIPDUB_POLLING__FIRST_POLL_MIN_S must be at least 5 s" in str(caught.value)
    monkeypatch.setenv("LIPDUB_PROVIDER__BASE_URL", "http://127.0.0.1:8199")
    assert load_settings().polling.first_poll_min_s == 2


def test_visibility_timeout_must_outlast_every_countdown_and_time_limit(monkeypatch):
    monkeypatch.setenv("LIPDUB_WORKER__MAX_COUNTDOWN_S", "4000")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "visibility_timeout_s must exceed" in str(caught.value)


def test_visibility_timeout_covers_a_full_countdown_then_a_full_run(monkeypatch):
    # A task waits out its countdown unacknowledged, then runs up to the hard limit.
    monkeypatch.setenv("LIPDUB_WORKER__TASK_TIME_LIMIT_S", "2000")
    monkeypatch.setenv("LIPDUB_WORKER__TASK_SOFT_TIME_LIMIT_S", "1900")
    monkeypatch.setenv("LIPDUB_WORKER__MAX_COUNTDOWN_S", "1700")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "(3700 s)" in str(caught.value)
    monkeypatch.setenv("LIPDUB_WORKER__VISIBILITY_TIMEOUT_S", "3701")
    assert load_settings().worker.visibility_timeout_s == 3701


def test_presigned_urls_must_outlive_the_item_deadline(monkeypatch):
    monkeypatch.setenv("LIPDUB_STORAGE__PRESIGN_EXPIRY_S", "3600")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "LIPDUB_STORAGE__PRESIGN_EXPIRY_S must cover" in str(caught.value)


def test_an_empty_endpoint_url_means_aws_and_a_bare_host_is_refused(monkeypatch):
    monkeypatch.setenv("LIPDUB_STORAGE__ENDPOINT_URL", "")
    assert load_settings().storage.endpoint_url is None
    monkeypatch.setenv("LIPDUB_STORAGE__ENDPOINT_URL", "minio:9000")
    with pytest.raises(SettingsError, match="LIPDUB_STORAGE__ENDPOINT_URL"):
        load_settings()


def test_the_sandbox_trial_settings_are_valid_and_match_the_sandboxs_account(monkeypatch):
    # configs/sandbox.env, as the README's trial sources it
    from pipeline.sandbox.config import SandboxConfig

    values = {}
    for line in (ROOT / "configs" / "sandbox.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    sandbox = SandboxConfig()
    # Then every lipdub line is a setting, and the limits are the sandbox's own
    assert {n for n in values if n.startswith("LIPDUB_")} <= set(setting_names())
    assert settings.provider.api_key.get_secret_value() in sandbox.api_keys
    assert settings.provider.starts_per_minute == sandbox.starts_per_minute
    assert settings.provider.max_concurrent == sandbox.max_concurrent
    assert settings.provider.is_local and settings.storage.endpoint_url


def test_a_notice_url_apprise_cannot_use_is_refused_without_showing_it(monkeypatch):
    monkeypatch.setenv("LIPDUB_NOTIFY__URLS", '["json://127.0.0.1/ok", "https://example.com/tok"]')
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "LIPDUB_NOTIFY__URLS: Value error, URL #2: not a URL apprise knows" in message
    assert "example.com/tok" not in message
    monkeypatch.setenv("LIPDUB_NOTIFY__URLS", '["json://127.0.0.1/ok"]')
    [url] = load_settings().notify.urls
    assert url.get_secret_value() == "json://127.0.0.1/ok" and "127.0.0.1" not in repr(url)
