"""Settings: defaults, the TOML file, RP_* environment variables and CLI flags.

This is the only module that reads ``os.environ``-like mappings; ``load_config``
takes the mapping as an argument so tests pass their own.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.database_url import DatabaseUrl, parse_database_url

__all__ = [
    "ConfigError",
    "ConnectionSettings",
    "DownloadSettings",
    "EventSettings",
    "JobSettings",
    "LimitSettings",
    "PipelineSettings",
    "PoolSettings",
    "Settings",
    "StoreSettings",
    "WebhookSettings",
    "load_config",
    "setting_names",
]

ENV_PREFIX = "RP_"


class ConfigError(Exception):
    """An invalid or unreadable setting; the message is one line naming it."""


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _non_negative(value: float) -> str | None:
    return None if value >= 0 else "must be 0 or greater"


def _port(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "must be between 0 and 65535"


def _host_names(value: tuple[str, ...]) -> str | None:
    for host in value:
        if not host or any(char in host for char in "/@ \t") or host.startswith("."):
            return f"{host!r} is not a host name (give bare hosts, e.g. images.example.com)"
    return None


def _database_url(value: str) -> str | None:
    try:
        parse_database_url(value)
    except ValueError as exc:
        return str(exc)
    return None


def _niceness(value: int) -> str | None:
    return None if 0 <= value <= 19 else "must be between 0 and 19"


def _one_of(*choices: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def _setting(default: Any, check: Callable[[Any], str | None] | None = None) -> Any:
    return field(default=default, metadata={"check": check})


# The groups each component receives: built once from Settings, so no component sees
# more configuration than it uses. Field names are the settings' own.


@dataclass(frozen=True, kw_only=True, slots=True)
class ConnectionSettings:
    """Client connections to the HTTP API: how long each may take, and how many at once."""

    header_timeout: float
    body_timeout: float
    keepalive_timeout: float
    max_connections: int


@dataclass(frozen=True, kw_only=True, slots=True)
class DownloadSettings:
    """The downloader and its session: timeouts, caps, the address policy, retry and breaker."""

    max_in_flight: int
    connect_timeout: float
    read_timeout: float
    total_timeout: float
    max_redirects: int
    max_image_bytes: int
    allow_private_networks: bool
    allowed_hosts: tuple[str, ...]
    retry_attempts: int
    retry_base_delay: float
    retry_max_delay: float
    circuit_breaker_threshold: int
    circuit_breaker_min_jobs: int
    circuit_breaker_cool_down: float
    breaker_wait_max: float


@dataclass(frozen=True, kw_only=True, slots=True)
class PoolSettings:
    """The process pool that measures images."""

    workers: int
    verify: str
    max_pixels: int
    max_jpeg_scans: int
    batch_size: int
    batch_max_bytes: int
    worker_niceness: int
    decode_timeout: float


@dataclass(frozen=True, kw_only=True, slots=True)
class PipelineSettings:
    """The per-image flow: how many images at once, the GPU wait, the bytes held."""

    max_in_flight: int
    gpu_delay_min: float
    gpu_delay_max: float
    image_bytes_budget: int


@dataclass(frozen=True, kw_only=True, slots=True)
class LimitSettings:
    """What one request may ask for: body, job and field sizes, pages."""

    max_body_bytes: int
    max_images_per_job: int
    max_url_length: int
    max_store_id_length: int
    max_visit_time_length: int
    allow_url_credentials: bool
    default_page_size: int
    max_page_size: int
    export_chunk_rows: int


@dataclass(frozen=True, kw_only=True, slots=True)
class JobSettings:
    """The job manager: admission control, retention and shutdown."""

    max_pending_images: int
    job_ttl: float
    max_finished_jobs: int
    shutdown_grace: float
    unsaved_results_limit: int
    status_refresh: float


@dataclass(frozen=True, kw_only=True, slots=True)
class EventSettings:
    """Live events: how many streams at once, the heartbeat, the first page of jobs."""

    max_event_streams: int
    sse_heartbeat: float
    max_page_size: int


@dataclass(frozen=True, kw_only=True, slots=True)
class StoreSettings:
    """The job store: where it is, how long to wait for it, retention, and replicas' claims."""

    database_url: str
    database_connect_timeout: float
    database_pool_size: int
    claim_timeout: float
    replica_name: str
    job_ttl: float
    max_finished_jobs: int
    max_pending_images: int
    finished_cache_bytes: int
    max_database_bytes: int
    idempotency_ttl: float

    @property
    def key_ttl(self) -> float:
        """How long an idempotency key is kept: never past its job (whose id it replays)."""
        return min(self.idempotency_ttl, self.job_ttl)

    @property
    def database(self) -> DatabaseUrl:
        return parse_database_url(self.database_url)


@dataclass(frozen=True, kw_only=True, slots=True)
class WebhookSettings:
    """Completion webhooks: the signing secret, the retry schedule, and how long a delivery
    attempt may hold its lease (an attempt lasts at most ``total_timeout``)."""

    webhook_secret: str = field(repr=False)
    webhook_max_attempts: int
    webhook_retry_base: float
    webhook_retry_max_delay: float
    webhook_max_in_flight: int
    total_timeout: float
    claim_timeout: float

    @property
    def enabled(self) -> bool:
        """Submits may carry a ``callback_url`` only when deliveries can be signed."""
        return bool(self.webhook_secret)

    @property
    def lease(self) -> float:
        """Seconds a taken delivery is this process's: its attempt, then ``claim_timeout`` of
        slack to record the outcome (the patience a shared store gives a silent replica)."""
        return self.total_timeout + self.claim_timeout


_GROUPS = {
    "connections": ConnectionSettings,
    "download": DownloadSettings,
    "pool": PoolSettings,
    "pipeline": PipelineSettings,
    "limits": LimitSettings,
    "jobs": JobSettings,
    "store": StoreSettings,
    "events": EventSettings,
    "webhooks": WebhookSettings,
}


@dataclass(frozen=True, kw_only=True, slots=True)
class Settings:
    """Every tunable of the service. ``config/default.toml`` documents each one."""

    host: str = _setting("0.0.0.0")
    port: int = _setting(8080, _port)
    stores: str = _setting("stores.csv")
    log_level: str = _setting("info", _one_of("debug", "info", "warning", "error"))
    log_format: str = _setting("json", _one_of("json", "text"))
    log_queue_limit: int = _setting(10_000, _positive)
    ready_timeout: float = _setting(2.0, _positive)
    ready_stall_timeout: float = _setting(60.0, _positive)
    event_loop: str = _setting("auto", _one_of("auto", "asyncio", "uvloop"))
    header_timeout: float = _setting(10.0, _positive)
    body_timeout: float = _setting(60.0, _positive)
    keepalive_timeout: float = _setting(15.0, _positive)
    max_connections: int = _setting(10_000, _positive)

    workers: int = _setting(0, _non_negative)
    verify: str = _setting("full", _one_of("full", "header"))
    max_pixels: int = _setting(50_000_000, _positive)
    max_jpeg_scans: int = _setting(100, _positive)
    batch_size: int = _setting(48, _positive)
    batch_max_bytes: int = _setting(32_000_000, _positive)
    worker_niceness: int = _setting(10, _niceness)
    decode_timeout: float = _setting(10.0, _positive)

    gpu_delay_min: float = _setting(0.1, _non_negative)
    gpu_delay_max: float = _setting(0.4, _non_negative)

    max_in_flight: int = _setting(64, _positive)
    connect_timeout: float = _setting(5.0, _positive)
    read_timeout: float = _setting(10.0, _positive)
    total_timeout: float = _setting(30.0, _positive)
    max_redirects: int = _setting(5, _non_negative)
    max_image_bytes: int = _setting(25_000_000, _positive)
    image_bytes_budget: int = _setting(256_000_000, _positive)
    allow_private_networks: bool = _setting(False)
    allowed_hosts: tuple[str, ...] = _setting((), _host_names)
    allow_url_credentials: bool = _setting(False)
    retry_attempts: int = _setting(3, _positive)
    retry_base_delay: float = _setting(0.5, _non_negative)
    retry_max_delay: float = _setting(10.0, _non_negative)
    circuit_breaker_threshold: int = _setting(20, _positive)
    circuit_breaker_min_jobs: int = _setting(2, _positive)
    circuit_breaker_cool_down: float = _setting(30.0, _non_negative)
    breaker_wait_max: float = _setting(60.0, _non_negative)

    max_body_bytes: int = _setting(10_000_000, _positive)
    max_images_per_job: int = _setting(100_000, _positive)
    max_url_length: int = _setting(2048, _positive)
    max_store_id_length: int = _setting(64, _positive)
    max_visit_time_length: int = _setting(64, _positive)
    default_page_size: int = _setting(100, _positive)
    max_page_size: int = _setting(1000, _positive)
    export_chunk_rows: int = _setting(1000, _positive)

    max_pending_images: int = _setting(1_000_000, _positive)
    job_ttl: float = _setting(86_400.0, _positive)
    max_finished_jobs: int = _setting(10_000, _positive)
    finished_cache_bytes: int = _setting(64_000_000, _positive)
    max_database_bytes: int = _setting(0, _non_negative)
    idempotency_ttl: float = _setting(86_400.0, _positive)
    shutdown_grace: float = _setting(10.0, _non_negative)
    unsaved_results_limit: int = _setting(100_000, _positive)

    max_event_streams: int = _setting(1000, _positive)
    sse_heartbeat: float = _setting(15.0, _positive)

    # The URL may hold a password: never in a repr, and errors show it masked.
    database_url: str = field(
        default="sqlite:///retail-pulse.db", repr=False, metadata={"check": _database_url}
    )
    database_connect_timeout: float = _setting(30.0, _non_negative)
    database_pool_size: int = _setting(10, _positive)
    claim_timeout: float = _setting(30.0, _positive)
    status_refresh: float = _setting(0.1, _non_negative)
    replica_name: str = _setting("")
    # Empty disables the check. repr=False keeps the key out of logs and tracebacks.
    api_key: str = field(default="", repr=False, metadata={"check": None})
    # Signs completion webhooks; empty refuses submits that carry a callback_url. Never in
    # a repr or a log line.
    webhook_secret: str = field(default="", repr=False, metadata={"check": None})
    webhook_max_attempts: int = _setting(8, _positive)
    webhook_retry_base: float = _setting(5.0, _positive)
    webhook_retry_max_delay: float = _setting(900.0, _positive)
    webhook_max_in_flight: int = _setting(16, _positive)

    connections: ConnectionSettings = field(
        init=False, repr=False, compare=False, metadata={"group": True}
    )
    download: DownloadSettings = field(
        init=False, repr=False, compare=False, metadata={"group": True}
    )
    pool: PoolSettings = field(init=False, repr=False, compare=False, metadata={"group": True})
    pipeline: PipelineSettings = field(
        init=False, repr=False, compare=False, metadata={"group": True}
    )
    limits: LimitSettings = field(init=False, repr=False, compare=False, metadata={"group": True})
    jobs: JobSettings = field(init=False, repr=False, compare=False, metadata={"group": True})
    store: StoreSettings = field(init=False, repr=False, compare=False, metadata={"group": True})
    events: EventSettings = field(init=False, repr=False, compare=False, metadata={"group": True})
    webhooks: WebhookSettings = field(
        init=False, repr=False, compare=False, metadata={"group": True}
    )

    def __post_init__(self) -> None:
        self._check()
        for name, group in _GROUPS.items():
            values = {spec.name: getattr(self, spec.name) for spec in dataclasses.fields(group)}
            object.__setattr__(self, name, group(**values))

    def _check(self) -> None:
        for spec in _setting_fields():
            check = spec.metadata.get("check")
            problem = check(getattr(self, spec.name)) if check else None
            if problem:
                # A field kept out of reprs may hold a secret: its problem says enough.
                shown = f" (got {getattr(self, spec.name)!r})" if spec.repr else ""
                raise ConfigError(f"invalid setting {spec.name}: {problem}{shown}")
        if self.gpu_delay_min > self.gpu_delay_max:
            raise ConfigError(
                "invalid setting gpu_delay_min: must not exceed gpu_delay_max "
                f"({self.gpu_delay_min} > {self.gpu_delay_max})"
            )
        if self.image_bytes_budget < self.max_image_bytes:
            # Otherwise an image of the largest allowed size could never be read.
            raise ConfigError(
                "invalid setting image_bytes_budget: must be at least max_image_bytes "
                f"({self.image_bytes_budget} < {self.max_image_bytes})"
            )
        if self.default_page_size > self.max_page_size:
            raise ConfigError("invalid setting default_page_size: must not exceed max_page_size")
        if self.webhook_retry_base > self.webhook_retry_max_delay:
            raise ConfigError(
                "invalid setting webhook_retry_base: must not exceed webhook_retry_max_delay "
                f"({self.webhook_retry_base} > {self.webhook_retry_max_delay})"
            )
        if self.max_images_per_job > self.max_pending_images:
            # Otherwise a job within the per-job limit could never be admitted.
            raise ConfigError(
                "invalid setting max_pending_images: must be at least max_images_per_job "
                f"({self.max_pending_images} < {self.max_images_per_job})"
            )


def _setting_fields() -> list[dataclasses.Field[Any]]:
    return [spec for spec in dataclasses.fields(Settings) if "group" not in spec.metadata]


def setting_names() -> list[str]:
    return [spec.name for spec in _setting_fields()]


def _field_types() -> dict[str, type]:
    # Resolve the string annotations that ``from __future__ import annotations`` leaves.
    names = {"str": str, "int": int, "float": float, "bool": bool, "tuple[str, ...]": tuple}
    return {spec.name: names[str(spec.type)] for spec in _setting_fields()}


_TYPES: dict[str, type] = _field_types()


def _coerce(name: str, raw: object, source: str, *, from_text: bool = True) -> object:
    """Check a value's type; text (env, CLI) is parsed, TOML values must already fit."""
    wanted = _TYPES[name]
    if wanted is tuple:
        return _coerce_list(name, raw, source, from_text=from_text)
    if from_text and isinstance(raw, str) and wanted is not str:
        text = raw.strip()
        try:
            if wanted is bool:
                lowered = text.lower()
                if lowered not in {"true", "false", "1", "0", "yes", "no"}:
                    raise ValueError(text)
                return lowered in {"true", "1", "yes"}
            return wanted(text)
        except ValueError:
            raise ConfigError(
                f"invalid setting {name} from {source}: expected {wanted.__name__}, got {raw!r}"
            ) from None
    if wanted is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if type(raw) is not wanted:
        raise ConfigError(
            f"invalid setting {name} from {source}: expected {wanted.__name__}, got {raw!r}"
        )
    return raw


def _coerce_list(name: str, raw: object, source: str, *, from_text: bool) -> tuple[str, ...]:
    # Text (env, CLI) is comma-separated; TOML gives an array. Hosts are case-insensitive.
    items = raw.split(",") if from_text and isinstance(raw, str) else raw
    if not isinstance(items, list | tuple) or not all(isinstance(item, str) for item in items):
        raise ConfigError(
            f"invalid setting {name} from {source}: expected a list of strings, got {raw!r}"
        )
    return tuple(item.strip().lower().rstrip(".") for item in items if item.strip())


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    unknown = sorted(set(data) - set(_TYPES))
    if unknown:
        raise ConfigError(f"unknown setting in {path}: {', '.join(unknown)}")
    return data


def load_config(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Settings:
    """Build ``Settings``: defaults < file < ``RP_*`` environment < ``overrides`` (CLI)."""
    values: dict[str, object] = {}
    if path is not None:
        for name, raw in _read_file(Path(path)).items():
            values[name] = _coerce(name, raw, str(path), from_text=False)
    for name in _TYPES:
        env_name = ENV_PREFIX + name.upper()
        if environ is not None and env_name in environ:
            values[name] = _coerce(name, environ[env_name], env_name)
    for name, raw in (overrides or {}).items():
        if raw is not None:
            values[name] = _coerce(name, raw, f"--{name.replace('_', '-')}")
    return Settings(**values)  # type: ignore[arg-type]
