"""The webhook settings: the secret stays out of reprs, and the schedule is checked."""

from __future__ import annotations

import pytest

from service.config import ConfigError, Settings, load_config


def test_the_secret_comes_from_the_environment_and_stays_out_of_every_repr() -> None:
    settings = load_config(environ={"RP_WEBHOOK_SECRET": "whsec-hunter2"})
    assert settings.webhooks.webhook_secret == "whsec-hunter2"
    assert settings.webhooks.enabled
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in repr(settings.webhooks)
    assert not Settings().webhooks.enabled


def test_the_lease_outlasts_an_attempt() -> None:
    webhooks = Settings(total_timeout=30.0, claim_timeout=10.0).webhooks
    assert webhooks.lease == 40.0


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"webhook_retry_base": 60.0, "webhook_retry_max_delay": 10.0}, "webhook_retry_base"),
        ({"webhook_max_attempts": 0}, "webhook_max_attempts"),
        ({"webhook_retry_base": 0.0}, "webhook_retry_base"),
        ({"webhook_max_in_flight": 0}, "webhook_max_in_flight"),
    ],
)
def test_a_bad_schedule_is_refused_naming_the_setting(
    values: dict[str, float], message: str
) -> None:
    with pytest.raises(ConfigError, match=f"invalid setting {message}"):
        Settings(**values)  # type: ignore[arg-type]
