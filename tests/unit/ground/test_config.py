"""Settings: the documented defaults file, precedence and one-line errors."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from service.config import ConfigError, Settings, load_config, setting_names

DEFAULT_TOML = Path(__file__).resolve().parents[3] / "config" / "default.toml"


def test_default_toml_documents_every_setting_with_its_default() -> None:
    documented = tomllib.loads(DEFAULT_TOML.read_text())
    # TOML has arrays where Settings holds (immutable) tuples.
    defaults = {
        field.name: list(field.default) if isinstance(field.default, tuple) else field.default
        for field in dataclasses.fields(Settings)
        if field.init
    }
    assert documented == defaults


def test_every_setting_in_default_toml_has_a_comment_above_it() -> None:
    lines = DEFAULT_TOML.read_text().splitlines()
    for number, line in enumerate(lines):
        if "=" in line and not line.lstrip().startswith("#"):
            assert lines[number - 1].lstrip().startswith("#"), f"no comment above {line!r}"


def test_default_toml_loads_to_the_defaults() -> None:
    assert load_config(DEFAULT_TOML, environ={}) == Settings()


def test_precedence_cli_over_env_over_file(tmp_path: Path) -> None:
    config = tmp_path / "rp.toml"
    config.write_text('port = 9001\nhost = "127.0.0.2"\nworkers = 3\n')
    env = {"RP_PORT": "9002", "RP_HOST": "127.0.0.3"}

    settings = load_config(config, environ=env, overrides={"port": 9003, "host": None})

    assert settings.port == 9003  # CLI
    assert settings.host == "127.0.0.3"  # env (the CLI flag was not given)
    assert settings.workers == 3  # file
    assert settings.verify == "full"  # default


@pytest.mark.parametrize(
    ("variable", "value", "parsed"),
    [
        ("RP_STORES", "/data/stores.csv", ("stores", "/data/stores.csv")),
        ("RP_WORKERS", "4", ("workers", 4)),
        ("RP_VERIFY", "header", ("verify", "header")),
        ("RP_GPU_DELAY_MIN", "0", ("gpu_delay_min", 0.0)),
        ("RP_GPU_DELAY_MAX", "0.25", ("gpu_delay_max", 0.25)),
        ("RP_MAX_IN_FLIGHT", "300", ("max_in_flight", 300)),
    ],
)
def test_environment_variables_override(
    variable: str, value: str, parsed: tuple[str, object]
) -> None:
    name, expected = parsed
    assert getattr(load_config(environ={variable: value}), name) == expected


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"RP_PORT": "eighty"}, "port"),
        ({"RP_PORT": "70000"}, "port"),
        ({"RP_WORKERS": "-1"}, "workers"),
        ({"RP_VERIFY": "sometimes"}, "verify"),
        ({"RP_MAX_JPEG_SCANS": "0"}, "max_jpeg_scans"),
        ({"RP_GPU_DELAY_MIN": "1", "RP_GPU_DELAY_MAX": "0.5"}, "gpu_delay_min"),
        ({"RP_MAX_IN_FLIGHT": "0"}, "max_in_flight"),
        ({"RP_IMAGE_BYTES_BUDGET": "1000", "RP_MAX_IMAGE_BYTES": "2000"}, "image_bytes_budget"),
    ],
)
def test_invalid_value_is_a_one_line_error_naming_the_setting(
    environ: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ=environ)
    message = str(caught.value)
    assert named in message
    assert "\n" not in message


def test_unknown_key_in_file_is_rejected(tmp_path: Path) -> None:
    config = tmp_path / "rp.toml"
    config.write_text("prot = 8080\n")
    with pytest.raises(ConfigError, match=r"unknown setting.*prot"):
        load_config(config, environ={})


def test_wrong_type_in_file_is_rejected(tmp_path: Path) -> None:
    config = tmp_path / "rp.toml"
    config.write_text('port = "8080"\n')
    with pytest.raises(ConfigError, match="port"):
        load_config(config, environ={})


def test_unparseable_file_is_rejected(tmp_path: Path) -> None:
    config = tmp_path / "rp.toml"
    config.write_text("port = = 1\n")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(config, environ={})


def test_setting_names_cover_the_issue_required_environment() -> None:
    required = {
        "host",
        "port",
        "stores",
        "workers",
        "verify",
        "gpu_delay_min",
        "gpu_delay_max",
        "max_in_flight",
    }
    assert required <= set(setting_names())
