"""Settings of client connections: header and keep-alive timeouts, the connection cap."""

from __future__ import annotations

import pytest

from service.config import ConfigError, Settings, load_config


def test_connection_settings_default_and_reach_their_group() -> None:
    connections = Settings().connections
    assert (connections.header_timeout, connections.keepalive_timeout) == (10.0, 15.0)
    assert connections.max_connections == 10_000


def test_connection_settings_come_from_the_environment() -> None:
    settings = load_config(
        None,
        {"RP_HEADER_TIMEOUT": "2.5", "RP_KEEPALIVE_TIMEOUT": "4", "RP_MAX_CONNECTIONS": "50"},
    )
    assert settings.connections.header_timeout == 2.5
    assert settings.connections.keepalive_timeout == 4.0
    assert settings.connections.max_connections == 50


@pytest.mark.parametrize(
    ("name", "value"),
    [("header_timeout", 0), ("keepalive_timeout", 0), ("max_connections", 0)],
)
def test_connection_settings_out_of_range_are_refused(name: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"invalid setting {name}: must be greater than 0"):
        Settings(**{name: value})  # type: ignore[arg-type]
