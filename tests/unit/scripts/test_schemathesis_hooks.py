"""scripts/schemathesis_hooks.py: a fuzzed submit never names a host but the run's own."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

IMAGE = "http://127.0.0.1:1/api/docs/assets/favicon-32x32.png"
CALLBACK = "http://127.0.0.1:2/hook"


@pytest.fixture
def hooks(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("RP_SCHEMATHESIS_IMAGE_URL", IMAGE)
    monkeypatch.setenv("RP_SCHEMATHESIS_CALLBACK_URL", CALLBACK)
    monkeypatch.delitem(sys.modules, "scripts.schemathesis_hooks", raising=False)
    return importlib.import_module("scripts.schemathesis_hooks")


def call(hooks: ModuleType, body: Any) -> Any:
    case = SimpleNamespace(body=body)
    hooks.before_call(None, case, {})
    return case.body


def test_callback_and_image_urls_become_loopback_ones(hooks: ModuleType) -> None:
    body = {
        "count": 1,
        "visits": [{"store_id": "x", "image_url": ["http://169.254.169.254/"], "visit_time": "t"}],
        "callback_url": "http://metadata.internal/hook",
    }
    rewritten = call(hooks, body)
    assert rewritten["callback_url"] == CALLBACK
    assert rewritten["visits"][0]["image_url"] == [IMAGE]


@pytest.mark.parametrize("value", [None, 42, ["http://a/"]])
def test_a_callback_url_that_is_not_a_string_stays_a_negative_case(
    hooks: ModuleType, value: Any
) -> None:
    assert call(hooks, {"callback_url": value})["callback_url"] == value


def test_a_body_without_visits_still_has_its_callback_rewritten(hooks: ModuleType) -> None:
    assert call(hooks, {"callback_url": "https://x.example/"}) == {"callback_url": CALLBACK}
