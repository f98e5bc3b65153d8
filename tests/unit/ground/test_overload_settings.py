"""Settings of the overload, retention, shutdown and API-key features."""

from __future__ import annotations

import pytest

from service.config import ConfigError, Settings, load_config


def test_pending_cap_below_the_per_job_limit_is_refused() -> None:
    # Such a job would pass validation and then never be admitted.
    with pytest.raises(ConfigError, match="max_pending_images: must be at least"):
        Settings(max_pending_images=10, max_images_per_job=11)
    assert Settings(max_pending_images=11, max_images_per_job=11).max_pending_images == 11


def test_api_key_comes_from_the_environment_and_stays_out_of_repr() -> None:
    settings = load_config(None, {"RP_API_KEY": "hunter2"})
    assert settings.api_key == "hunter2"
    assert "hunter2" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value"),
    [("job_ttl", 0), ("max_finished_jobs", 0), ("max_pending_images", 0), ("shutdown_grace", -1)],
)
def test_out_of_range_values_are_refused(name: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"invalid setting {name}"):
        Settings(**{name: value})  # type: ignore[arg-type]
