"""Parameters the job routes share: the job id in the path, and the page size."""

from __future__ import annotations

from aiohttp import web

from service.api import keys
from service.api.errors import BadRequest
from service.api.schemas import parse_job_id

__all__ = ["page_limit", "path_job_id"]


def path_job_id(request: web.Request) -> int:
    """The ``{job_id}`` of a job route; 400 when it is not a positive integer."""
    job_id = parse_job_id(request.match_info["job_id"])
    if job_id is None:
        raise BadRequest("job id must be a positive integer")
    return job_id


def page_limit(request: web.Request, requested: int | None) -> int:
    """A page size: the default when none was asked for, never above the maximum."""
    limits = request.app[keys.SETTINGS].limits
    return min(requested or limits.default_page_size, limits.max_page_size)
