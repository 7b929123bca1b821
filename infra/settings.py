"""One settings object, parsed once from ORDO_* environment variables and validated up front."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

NAME_RE = re.compile(r"^[a-z0-9_-]{1,64}$")
# The largest page of a timeline a gateway may be set to serve (`timeline_page`).
TIMELINE_PAGE_MAX = 10_000


class SettingsError(ValueError):
    """A setting is missing, malformed or inconsistent with another."""


@dataclass(frozen=True)
class Settings:
    """Every timer and limit of Ordo. Defaults suit production; tests shrink the timers."""

    nats_url: str = ""
    # This process's NATS user (infra.nats_auth: one per service); empty: connect without a user.
    nats_user: str = ""
    nats_password: str = ""
    database_url: str = ""
    data_dir: Path = Path(".ordo")
    tenant: str = "default"
    # Event-log stream replicas (3 on a cluster) and the NATS duplicate window for Nats-Msg-Id.
    replicas: int = 1
    duplicate_window_s: float = 120.0
    sync_always: bool = False
    # Worker leases: the ack deadline, and how often the lease is extended (<= ack_wait / 3).
    ack_wait_s: float = 30.0
    lease_extend_every_s: float = 10.0
    # Retry backoff: base * 2**(attempt-1), capped, +/-20% jitter.
    backoff_base_s: float = 1.0
    backoff_max_s: float = 300.0
    default_timeout_s: float = 300.0
    default_max_attempts: int = 3
    cancel_grace_s: float = 5.0
    shutdown_grace_s: float = 10.0
    # A worker with no handler for a task's type gives its ticket back for a worker that has one (a
    # rolling deploy) until the ticket has waited this long; then it fails the task (UnknownTaskType).
    unknown_type_wait_s: float = 300.0
    # Attempts one worker runs at once (async handlers: a wave of fetched dispatches runs together).
    worker_concurrency: int = 100
    fetch_batch: int = 100
    # Durable timers fire this long before the due time; the scheduler holds the rest locally.
    timer_lead_s: float = 2.0
    # A fired timer message is kept this long in ORDO_TIMERS (per-message TTL); pending timers never
    # age out. All schedulers down longer than this loses the timers that fired meanwhile.
    timer_fired_ttl_s: float = 30 * 24 * 3600.0
    # Payload limit for one task (bytes) and the HTTP body limit.
    max_payload_bytes: int = 256 * 1024
    max_body_bytes: int = 4 * 1024 * 1024
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    # Projection batching: events applied per transaction.
    projection_batch: int = 1000
    # While events arrive faster than this, the projector commits at most once per this interval,
    # applying together what arrived meanwhile (0: a commit per arrival).
    projection_commit_interval_s: float = 0.005
    # After a quiet spell the projector holds the first event this long, with what arrives meanwhile,
    # before applying it: the worker's start of the task goes first (decision 50). 0: at once.
    projection_linger_s: float = 0.003
    # A batch submit goes out in pieces, each waiting while the read model trails the log by more than
    # a window of at most this many events (pieces of a quarter of it), which narrows while pieces take
    # longer than ORDO_SUBMIT_LAG_S to show; one batch submit waits at most
    # ORDO_SUBMIT_BACKLOG_WAIT_S in all (infra/read_gate.py, decision 59). 0: batch submits are not
    # paced.
    submit_backlog: int = 400
    submit_backlog_wait_s: float = 5.0
    submit_lag_s: float = 0.05
    # A worker takes new tickets only while the read model shows its own events within this many
    # seconds (at most 1 s of waiting per take; infra/read_gate.py, decision 60). 0: not paced.
    worker_lag_s: float = 0.06
    # Gateway auth: API keys stored hashed in PostgreSQL. Off here (library and test default); the
    # `ordo` entry points switch it on unless ORDO_AUTH=false or `ordo up --no-auth`.
    auth: bool = False
    # The local admin key `ordo up` creates (ORDO_ADMIN_KEY); generated and printed when empty.
    admin_key: str = ""
    session_ttl_s: float = 12 * 3600.0
    # API keys and ended sessions are kept in each gateway's memory, so the submit path needs the
    # event log only: the table is reloaded every ORDO_KEY_CACHE_TTL_S (a revocation made on another
    # gateway counts within that time; on the revoking gateway at once). While PostgreSQL is
    # unreachable the last loaded table keeps serving for up to ORDO_KEY_CACHE_MAX_STALE_S; past
    # that, requests answer 503 until it can be reloaded.
    key_cache_ttl_s: float = 30.0
    key_cache_max_stale_s: float = 900.0
    # /openapi.json and /docs need a key (any role) unless this is on.
    public_docs: bool = False
    # Proxies whose X-Forwarded-Proto/-For the gateway trusts (uvicorn's forwarded_allow_ips: a
    # comma-separated list of addresses or "*"), so the session cookie is Secure behind TLS.
    forwarded_allow_ips: str = "127.0.0.1"
    # Per-API-key limits: a token bucket of requests, concurrent SSE streams; request sizes.
    rate_limit_per_s: float = 2000.0
    rate_limit_burst: int = 4000
    sse_max_per_key: int = 20
    max_batch: int = 10_000
    max_page: int = 500
    # Events per page of a task's or a schedule's timeline: the default and the largest `limit`.
    timeline_page: int = 10_000
    # /metrics: task series of their own for this many task types (the busiest); the rest summed.
    metrics_types: int = 100
    # A gateway's PostgreSQL query, and its wait for a pooled connection, give up after this long
    # (503): a hung (not crashed) database answers no query and closes no connection.
    pg_command_timeout_s: float = 10.0
    # Read-your-writes: how long a `consistency=wait` read may wait for the read model.
    consistency_wait_s: float = 5.0
    # SSE: keep-alive comment interval; a client that does not take a write for this long is dropped.
    sse_ping_s: float = 15.0
    sse_send_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not NAME_RE.fullmatch(self.tenant):
            raise SettingsError(f"ORDO_TENANT {self.tenant!r} must match {NAME_RE.pattern}")
        if self.ack_wait_s <= 0:
            raise SettingsError("ORDO_ACK_WAIT_S must be > 0")
        if self.lease_extend_every_s <= 0 or self.lease_extend_every_s > self.ack_wait_s / 3:
            raise SettingsError(
                f"ORDO_LEASE_EXTEND_EVERY_S ({self.lease_extend_every_s}) must be > 0 and "
                f"<= ORDO_ACK_WAIT_S / 3 ({self.ack_wait_s / 3:g})"
            )
        if not 0 < self.backoff_base_s <= self.backoff_max_s:
            raise SettingsError("need 0 < ORDO_BACKOFF_BASE_S <= ORDO_BACKOFF_MAX_S")
        if self.timer_fired_ttl_s < 1 or self.timer_fired_ttl_s <= self.timer_lead_s:
            raise SettingsError("ORDO_TIMER_FIRED_TTL_S must be >= 1 and > ORDO_TIMER_LEAD_S")
        if self.replicas not in (1, 3, 5):
            raise SettingsError("ORDO_REPLICAS must be 1, 3 or 5")
        if self.worker_concurrency < 1 or self.fetch_batch < 1:
            raise SettingsError("ORDO_WORKER_CONCURRENCY and ORDO_FETCH_BATCH must be >= 1")
        if self.max_payload_bytes < 1 or self.max_body_bytes < self.max_payload_bytes:
            raise SettingsError("need 1 <= ORDO_MAX_PAYLOAD_BYTES <= ORDO_MAX_BODY_BYTES")
        if self.submit_backlog < 0 or self.submit_backlog_wait_s < 0:
            raise SettingsError("ORDO_SUBMIT_BACKLOG and ORDO_SUBMIT_BACKLOG_WAIT_S must be >= 0")
        if not 0 < self.submit_lag_s <= 60:
            raise SettingsError("ORDO_SUBMIT_LAG_S must be > 0 and <= 60")
        if not 0 <= self.worker_lag_s <= 60:
            raise SettingsError("ORDO_WORKER_LAG_S must be >= 0 and <= 60 (0: workers not paced)")
        if self.unknown_type_wait_s < 0:
            raise SettingsError("ORDO_UNKNOWN_TYPE_WAIT_S must be >= 0")
        if self.default_max_attempts < 1 or self.default_timeout_s <= 0:
            raise SettingsError("ORDO_DEFAULT_MAX_ATTEMPTS >= 1 and ORDO_DEFAULT_TIMEOUT_S > 0")
        if self.rate_limit_per_s <= 0 or self.rate_limit_burst < 1 or self.sse_max_per_key < 1:
            raise SettingsError(
                "need ORDO_RATE_LIMIT_PER_S > 0, ORDO_RATE_LIMIT_BURST >= 1, ORDO_SSE_MAX_PER_KEY >= 1"
            )
        if not 1 <= self.max_batch <= 100_000 or not 1 <= self.max_page <= 10_000:
            raise SettingsError("need 1 <= ORDO_MAX_BATCH <= 100000 and 1 <= ORDO_MAX_PAGE <= 10000")
        if not 1 <= self.metrics_types <= 10_000:
            raise SettingsError("need 1 <= ORDO_METRICS_TYPES <= 10000")
        if not 1 <= self.timeline_page <= TIMELINE_PAGE_MAX:
            raise SettingsError(f"need 1 <= ORDO_TIMELINE_PAGE <= {TIMELINE_PAGE_MAX}")
        if not 0 < self.key_cache_ttl_s <= self.key_cache_max_stale_s:
            raise SettingsError("need 0 < ORDO_KEY_CACHE_TTL_S <= ORDO_KEY_CACHE_MAX_STALE_S")
        if not 0 <= self.projection_commit_interval_s <= 1 or not 0 <= self.projection_linger_s <= 1:
            raise SettingsError(
                "need 0 <= ORDO_PROJECTION_COMMIT_INTERVAL_S <= 1 and 0 <= ORDO_PROJECTION_LINGER_S <= 1"
            )
        if self.pg_command_timeout_s <= 0:
            raise SettingsError("ORDO_PG_COMMAND_TIMEOUT_S must be > 0")
        if self.sse_ping_s <= 0 or self.sse_send_timeout_s <= 0 or self.consistency_wait_s < 0:
            raise SettingsError("ORDO_SSE_PING_S, ORDO_SSE_SEND_TIMEOUT_S > 0; ORDO_CONSISTENCY_WAIT_S >= 0")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read ORDO_<FIELD> for every field; unknown ORDO_ variables are ignored."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f"ORDO_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            default = getattr(cls, f.name)
            try:
                if isinstance(default, bool):
                    values[f.name] = raw.strip().lower() in ("1", "true", "yes", "on")
                elif isinstance(default, int):
                    values[f.name] = int(raw)
                elif isinstance(default, float):
                    values[f.name] = float(raw)
                elif isinstance(default, Path):
                    values[f.name] = Path(raw)
                else:
                    values[f.name] = raw
            except ValueError as exc:
                raise SettingsError(f"ORDO_{f.name.upper()}={raw!r}: {exc}") from exc
        return cls(**values)  # type: ignore[arg-type]

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """The ORDO_* variables that reproduce these settings in a child process."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f"ORDO_{f.name.upper()}"] = (
                ("true" if value else "false") if isinstance(value, bool) else str(value)
            )
        return out
