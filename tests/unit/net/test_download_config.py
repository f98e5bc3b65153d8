"""Download settings: the allow-list as a TOML array or a comma-separated variable, the flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import ConfigError, Settings, load_config
from service.net.guarded_session import address_policy_from


def test_defaults_block_private_networks_and_allow_any_public_host() -> None:
    settings = Settings()
    assert settings.allow_private_networks is False
    assert settings.allowed_hosts == ()
    policy = address_policy_from(settings.download)
    assert not policy.address_allowed("127.0.0.1")
    assert policy.host_allowed("images.example.com")


@pytest.mark.parametrize(("text", "expected"), [("true", True), ("false", False), ("1", True)])
def test_allow_private_networks_from_the_environment(text: str, expected: bool) -> None:
    settings = load_config(environ={"RP_ALLOW_PRIVATE_NETWORKS": text})
    assert settings.allow_private_networks is expected
    assert address_policy_from(settings.download).address_allowed("10.0.0.1") is expected


def test_allowed_hosts_from_a_comma_separated_variable() -> None:
    settings = load_config(environ={"RP_ALLOWED_HOSTS": " Images.Example.com, cdn.example.net.,"})
    assert settings.allowed_hosts == ("images.example.com", "cdn.example.net")
    policy = address_policy_from(settings.download)
    assert policy.host_allowed("a.cdn.example.net")
    assert not policy.host_allowed("example.org")


def test_empty_variable_means_no_allow_list() -> None:
    assert load_config(environ={"RP_ALLOWED_HOSTS": ""}).allowed_hosts == ()


def test_allowed_hosts_from_a_toml_array(tmp_path: Path) -> None:
    config = tmp_path / "rp.toml"
    config.write_text('allowed_hosts = ["images.example.com"]\n')
    assert load_config(config, environ={}).allowed_hosts == ("images.example.com",)


@pytest.mark.parametrize("value", ['"images.example.com"', "[1, 2]", "true"])
def test_allowed_hosts_in_toml_must_be_an_array_of_strings(tmp_path: Path, value: str) -> None:
    config = tmp_path / "rp.toml"
    config.write_text(f"allowed_hosts = {value}\n")
    with pytest.raises(ConfigError, match=r"allowed_hosts.*list of strings"):
        load_config(config, environ={})


@pytest.mark.parametrize("entry", ["https://images.example.com", "images.example.com/x", ".com"])
def test_allowed_hosts_entries_must_be_bare_hosts(entry: str) -> None:
    with pytest.raises(ConfigError, match="invalid setting allowed_hosts"):
        load_config(environ={"RP_ALLOWED_HOSTS": entry})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RP_RETRY_ATTEMPTS", "0"),
        ("RP_RETRY_BASE_DELAY", "-1"),
        ("RP_CIRCUIT_BREAKER_THRESHOLD", "0"),
        ("RP_CIRCUIT_BREAKER_COOL_DOWN", "-1"),
    ],
)
def test_retry_and_breaker_settings_are_checked(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name.removeprefix("RP_").lower()):
        load_config(environ={name: value})
