"""Reading a ``text/event-stream`` response as the SSE spec parses it, block by block."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp

__all__ = ["Block", "SseReader", "parse_events"]


@dataclass
class Block:
    """The lines up to one blank line: an event (``event``/``data``/``id``), a ``retry``
    field, comments, or several of these."""

    event: str | None = None
    data: str | None = None
    id: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        assert self.data is not None, self
        return json.loads(self.data)


def parse_events(text: str) -> list[Block]:
    """Every block of a whole stream's text."""
    blocks = []
    for chunk in text.replace("\r\n", "\n").split("\n\n"):
        if chunk.strip("\n"):
            blocks.append(_parse_block(chunk.strip("\n").split("\n")))
    return blocks


def _parse_block(lines: list[str]) -> Block:
    block = Block()
    for line in lines:
        _add_field(block, line)
    return block


def _add_field(block: Block, line: str) -> None:
    name, _, value = line.partition(":")
    value = value.removeprefix(" ")
    if not name:
        block.comments.append(value)
    elif name == "data":
        block.data = value if block.data is None else f"{block.data}\n{value}"
    elif name == "event":
        block.event = value
    elif name == "id":
        block.id = value
    elif name == "retry":
        block.retry = int(value)


class SseReader:
    """Reads blocks from a streaming response; ``None`` at the end of the stream. Each call
    fails after ``within`` seconds in all."""

    def __init__(self, response: aiohttp.ClientResponse, *, within: float = 15.0) -> None:
        self.response = response
        self.within = within

    async def block(self) -> Block | None:
        async with asyncio.timeout(self.within):
            return await self._block()

    async def _block(self) -> Block | None:
        block = Block()
        started = False
        while True:
            raw = await self.response.content.readline()
            if not raw:
                return block if started else None
            line = raw.decode().rstrip("\r\n")
            if not line:
                if started:
                    return block
                continue
            started = True
            _add_field(block, line)

    async def event(self) -> Block:
        """The next block that is an event (comments and retry-only blocks skipped)."""
        async with asyncio.timeout(self.within):
            while True:
                block = await self._block()
                assert block is not None, "the stream ended"
                if block.data is not None:
                    return block

    async def rest(self) -> list[Block]:
        """Every block up to the end of the stream (heartbeats do not extend the deadline)."""
        blocks = []
        async with asyncio.timeout(self.within):
            while (block := await self._block()) is not None:
                blocks.append(block)
        return blocks
