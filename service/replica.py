"""Who this process is among the service's replicas: a random id per start, and a name.

The id is new at every start, never the host name plus pid, so a restarted
replica cannot mistake another's claims (or its own former ones) for its own.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass, field

__all__ = ["Replica"]


@dataclass(frozen=True, slots=True)
class Replica:
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    started_at: float = field(default_factory=time.time)
    # What operators call it (replica_name); host:pid unless they chose.
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or f"{self.host}:{self.pid}"

    @property
    def short_id(self) -> str:
        """Enough of the id to tell replicas apart in a log line."""
        return self.id.hex[:8]
