"""Which event loop ``python -m service`` runs on (the ``event_loop`` setting)."""

from __future__ import annotations

import asyncio
import importlib
from types import ModuleType

import pytest
import uvloop

from service.app import event_loop_factory
from service.config import ConfigError


def _kind(kind: str) -> type:
    loop = event_loop_factory(kind)()
    try:
        return type(loop)
    finally:
        loop.close()


def test_auto_uses_uvloop_when_installed() -> None:
    assert issubclass(_kind("auto"), uvloop.Loop)


def test_asyncio_is_the_plain_loop_even_with_uvloop_installed() -> None:
    kind = _kind("asyncio")
    assert not issubclass(kind, uvloop.Loop)
    assert issubclass(kind, asyncio.BaseEventLoop)


def _without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def fake(name: str, package: str | None = None) -> ModuleType:
        if name == "uvloop":
            raise ImportError("No module named 'uvloop'")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", fake)


def test_auto_falls_back_to_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    _without_uvloop(monkeypatch)
    assert not issubclass(_kind("auto"), uvloop.Loop)


def test_asking_for_uvloop_without_it_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _without_uvloop(monkeypatch)
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        event_loop_factory("uvloop")
