"""Several job observers as one: the job manager tells one, and it tells each in turn."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from service.jobs.manager import JobObserver
from service.jobs.model import JobSummary
from service.jobs.store import CreatedJob
from service.pipeline.flow import SettledImage

__all__ = ["JobObservers"]

log = logging.getLogger(__name__)


class JobObservers:
    """A ``JobObserver`` that passes every call on; one observer's failure is logged and
    does not keep the call from the others."""

    def __init__(self, *observers: JobObserver) -> None:
        self._observers = observers

    def job_created(self, created: CreatedJob) -> None:
        self._each(lambda observer: observer.job_created(created))

    def images_recorded(self, recorded: Sequence[SettledImage]) -> None:
        self._each(lambda observer: observer.images_recorded(recorded))

    def job_finished(self, summary: JobSummary) -> None:
        self._each(lambda observer: observer.job_finished(summary))

    def _each(self, call: Callable[[JobObserver], None]) -> None:
        for observer in self._observers:
            try:
                call(observer)
            except Exception:
                log.exception("job observer %s failed", type(observer).__name__)
