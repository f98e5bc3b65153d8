"""A scripted DNS resolver for tests: each lookup gets the next answer."""

from __future__ import annotations

import socket

from aiohttp.abc import AbstractResolver, ResolveResult

__all__ = ["StubResolver"]


class StubResolver(AbstractResolver):
    """Answers each lookup with the next list of addresses: DNS that changes its mind."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=0,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        pass
