"""Reading jobs out: the recent-jobs list and per-image results as JSON pages or streamed CSV."""

from __future__ import annotations

import csv
import io
import logging
from typing import Any

from aiohttp import web

from service.api import keys
from service.api.errors import ApiError, NotFound
from service.api.json_body import json_response
from service.api.params import page_limit, path_job_id
from service.api.schemas import (
    JobListQuerySchema,
    JobListSchema,
    ResultsPageSchema,
    ResultsQuerySchema,
)
from service.errors import ServiceError
from service.jobs.manager import JobManager
from service.jobs.model import ImageRow, JobStatus, JobSummary

__all__ = ["CSV_COLUMNS", "FORMULA_PREFIXES", "routes"]

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

CSV_COLUMNS = (
    "store_id",
    "store_name",
    "area_code",
    "visit_time",
    "url",
    "width",
    "height",
    "perimeter",
    "error",
)

# A spreadsheet runs a cell starting with one of these as a formula (OWASP CSV injection).
FORMULA_PREFIXES = frozenset("=+-@\t\r")

_list_query_schema = JobListQuerySchema()
_list_schema = JobListSchema()
_results_query_schema = ResultsQuerySchema()
_results_page_schema = ResultsPageSchema()


def _summary_body(summary: JobSummary) -> dict[str, Any]:
    return {
        "job_id": summary.job_id,
        "status": summary.status.value,
        "created_at": summary.created_at,
        "finished_at": summary.finished_at,
        "progress": {"total": summary.total, "done": summary.done, "failed": summary.failed},
    }


@routes.get("/api/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    query = _list_query_schema.load(dict(request.query))
    limit = page_limit(request, query.get("limit"))
    status = JobStatus(query["status"]) if "status" in query else None
    # One more than the page: whether an older page exists, without a count.
    summaries = await request.app[keys.JOB_MANAGER].recent(limit + 1, status, query.get("before"))
    page = summaries[:limit]
    body = {
        "jobs": [_summary_body(summary) for summary in page],
        "next_before": page[-1].job_id if len(summaries) > limit else None,
    }
    return json_response(_list_schema.dump(body))


@routes.get("/api/jobs/{job_id}/results")
async def job_results(request: web.Request) -> web.StreamResponse:
    job_id = path_job_id(request)
    settings = request.app[keys.SETTINGS]
    query = _results_query_schema.load(dict(request.query))
    manager = request.app[keys.JOB_MANAGER]
    if query["format"] == "csv":
        return await _stream_csv(
            request,
            manager,
            job_id,
            offset=query["offset"],
            limit=query.get("limit"),
            chunk_rows=settings.limits.export_chunk_rows,
        )
    limit = page_limit(request, query.get("limit"))
    found = await manager.rows(job_id, query["offset"], limit)
    if found is None:
        raise NotFound(f"job {job_id} not found")
    summary, rows = found
    body = {
        "job_id": summary.job_id,
        "status": summary.status.value,
        "total": summary.total,
        "offset": query["offset"],
        "limit": limit,
        "results": rows,
    }
    return json_response(_results_page_schema.dump(body))


def _text_cell(value: str | None) -> str | None:
    """Prefix ``'`` so a spreadsheet shows the text instead of evaluating it; None stays None."""
    # Indexing plus a frozenset lookup: the cheapest test, run for six cells of every row.
    return "'" + value if value and value[0] in FORMULA_PREFIXES else value


def _csv_cells(row: ImageRow) -> tuple[str | int | None, ...]:
    """One CSV row, cells in CSV_COLUMNS order; the csv module writes None as ""."""
    # width, height and perimeter are the service's own positive integers (imaging
    # rejects sizes <= 0), so they can never start with "-" and are left as numbers.
    return (
        _text_cell(row.store_id),
        _text_cell(row.store_name),
        _text_cell(row.area_code),
        _text_cell(row.visit_time),
        _text_cell(row.url),
        row.width,
        row.height,
        row.perimeter,
        _text_cell(row.error),
    )


async def _stream_csv(
    request: web.Request,
    manager: JobManager,
    job_id: int,
    *,
    offset: int,
    limit: int | None,
    chunk_rows: int,
) -> web.StreamResponse:
    """Write the rows a chunk at a time: one chunk in memory, one short actor call each."""
    summary = await manager.summary(job_id)
    if summary is None:
        raise NotFound(f"job {job_id} not found")
    end = summary.total if limit is None else min(summary.total, offset + limit)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="job-{job_id}-results.csv"',
        }
    )
    await response.prepare(request)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    position = offset
    try:
        while position < end:
            found = await manager.rows(job_id, position, min(chunk_rows, end - position))
            if found is None or not found[1]:
                raise NotFound(f"job {job_id} went away during the export")
            rows = found[1]
            writer.writerows(map(_csv_cells, rows))
            position += len(rows)
            await response.write(buffer.getvalue().encode())
            buffer.seek(0)
            buffer.truncate()
        await response.write(buffer.getvalue().encode())
        await response.write_eof()
    except ConnectionResetError:
        # The client hung up mid-download: nothing to answer, nothing went wrong here.
        log.info(
            "results export abandoned by the client",
            extra={"job_id": job_id, "rows_written": position - offset},
        )
    except (ApiError, ServiceError) as exc:
        # The headers are out, so no error body can follow: cut the connection,
        # leaving the chunked body unterminated so the client sees it is incomplete.
        log.warning(
            "results export cut short",
            extra={"job_id": job_id, "rows_written": position - offset, "reason": exc.message},
        )
        if request.transport is not None:
            request.transport.close()
    return response
