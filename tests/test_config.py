"""Settings: strict parsing with errors that name the variable and the value."""

import pytest

from inference_app.config import ConfigError, Settings


def test_defaults_need_no_environment(tmp_path):
    settings = Settings.from_env({}, instance_path=str(tmp_path))
    assert settings.port == 8002
    assert settings.idle_timeout_seconds == 300
    assert settings.max_running_containers == 10
    assert settings.publish_host == "127.0.0.1"
    assert settings.database_url == f"sqlite:///{tmp_path}/inference.db"
    assert settings.background_in_web


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("IDLE_TIMEOUT_SECONDS", "five", "IDLE_TIMEOUT_SECONDS must be a whole number, got 'five'"),
        ("IDLE_TIMEOUT_SECONDS", "0", "IDLE_TIMEOUT_SECONDS must be at least 1, got 0"),
        ("MAX_RUNNING_CONTAINERS", "-2", "MAX_RUNNING_CONTAINERS must be at least 1, got -2"),
        ("PORT", "70000", "PORT must be at most 65535, got 70000"),
        ("READ_ONLY_ROOTFS", "maybe", "READ_ONLY_ROOTFS must be one of true/false"),
        ("START_TIMEOUT_SECONDS", "nan", "START_TIMEOUT_SECONDS must be a finite number"),
        ("DATABASE_URL", "mysql://x", "DATABASE_URL must be a sqlite:// or postgresql:// URL"),
        ("DEFAULT_MEMORY", "lots", "DEFAULT_MEMORY must be a size like '512m'"),
        ("RUN_BACKGROUND", "sometimes", "RUN_BACKGROUND must be one of auto, web, worker"),
    ],
)
def test_bad_values_stop_start_up_naming_the_variable(tmp_path, name, value, expected):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: value}, instance_path=str(tmp_path))
    assert expected in str(caught.value)


def test_strict_booleans(tmp_path):
    assert Settings.from_env({"READ_ONLY_ROOTFS": "yes"}, instance_path=str(tmp_path)).read_only_rootfs is True
    assert Settings.from_env({"READ_ONLY_ROOTFS": "0"}, instance_path=str(tmp_path)).read_only_rootfs is False


def test_unknown_override_refused(tmp_path):
    settings = Settings.from_env({}, instance_path=str(tmp_path))
    with pytest.raises(ConfigError, match="unknown settings: idle_timeout"):
        settings.with_overrides({"idle_timeout": 3})


def test_create_app_refuses_bad_environment(monkeypatch):
    from inference_app import create_app

    monkeypatch.setenv("IDLE_TIMEOUT_SECONDS", "soon")
    with pytest.raises(ConfigError, match="IDLE_TIMEOUT_SECONDS must be a whole number, got 'soon'"):
        create_app()
