"""Configuration: ``SKIPLOCK_`` environment variables, validated once at start."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, NamedTuple

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from skiplock.errors import ConfigError
from skiplock.queue_names import check_queue_name
from skiplock.rates import Rate


class Settings(BaseSettings):
    """Every knob of a skiplock process. Read with :meth:`Settings.load`; nothing is read at import."""

    model_config = SettingsConfigDict(env_prefix="SKIPLOCK_", frozen=True, extra="ignore")

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SKIPLOCK_DATABASE_URL", "DATABASE_URL"),
        description="PostgreSQL URL; unset starts an embedded server under data_dir/pg.",
    )
    database_pooler: Literal["none", "transaction"] = Field(
        default="none",
        description="transaction: database_url is a pooler in transaction mode (PgBouncer's pool_mode ="
        " transaction): no named prepared statements and no session settings go through it, and"
        " listen_database_url must be set.",
    )
    listen_database_url: str | None = Field(
        default=None,
        description="A direct PostgreSQL URL (no transaction pooler) for what needs a session of its own:"
        " the LISTEN connection, a worker's heartbeat and the migrations' advisory lock;"
        " unset: database_url.",
    )
    read_database_url: str | None = Field(
        default=None,
        description="A read replica (a streaming standby, reached directly) for the reads that may lag:"
        " the jobs and workflows lists, searches, failure groups, the dashboard's counts and charts;"
        " unset: database_url. Reads go to database_url while it is down or lags past read_max_lag_s.",
    )
    read_max_lag_s: float = Field(
        default=10.0, gt=0, le=3600, description="A read replica lagging more than this is not read from."
    )
    horizon_warning_s: float = Field(
        default=300.0,
        gt=0,
        le=86_400,
        description="The dashboard warns of a transaction (or snapshot) open longer than this: it"
        " holds back vacuum for every table.",
    )
    data_dir: Path = Field(default=Path(".skiplock"), description="Where the embedded server lives.")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    concurrency: int = Field(default=100, ge=1, le=10_000, description="Jobs run at once.")
    queues: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Queues served, 'name', 'name:limit' (per process), with ':global=N' and ':rate=N/unit' "
        "declaring limits across replicas; '*' (or '*:limit'): every queue that has jobs; empty: 'default' "
        "and every task's queue.",
    )
    worker: bool = True
    scheduler: bool = Field(default=True, description="Fire due schedules in this process.")
    auto_migrate: bool = Field(default=True, description="Apply pending migrations at start.")
    poll_interval_s: float = Field(default=1.0, gt=0, le=60)
    lease_s: float = Field(
        default=30.0,
        ge=1,  # a lease must outlast a heartbeat round trip and the fence's margin (0.2 s at least)
        le=86_400,
        description="A claimed job's lease: renewed every third of it; a process that cannot renew it"
        " stops the job a fifth of it (0.2 to 5 s) before it could expire, or holds it through an"
        " outage at most one hold (this, at least 5 s) longer; rescuers wait that hold past a lease's"
        " expiry. The same in every replica.",
    )
    shutdown_grace_s: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="On SIGINT/SIGTERM, running jobs get this long to finish; the rest are handed"
        " back, and the process exits within this + 5 s (a second signal: at once).",
    )
    rescue_interval_s: float = Field(default=5.0, gt=0, le=3600)
    retention_s: float = Field(
        default=7 * 86_400, ge=60, description="Finished jobs are deleted after this many seconds."
    )
    prune_interval_s: float = Field(default=60.0, gt=0, le=86_400)
    worker_retention_s: float = Field(
        default=86_400,
        ge=60,
        description="Offline workers' rows (GET /workers) are deleted after this many seconds.",
    )
    stats_interval_s: float = Field(
        default=15.0,
        gt=0,
        le=3600,
        description="How often the per-minute rollup behind the dashboard's charts is brought up to date.",
    )
    stats_retention_s: float = Field(
        default=8 * 86_400,
        ge=86_400,
        description="The per-minute rollup's rows are deleted after this many seconds.",
    )
    progress_interval_s: float = Field(
        default=0.1,
        gt=0,
        le=60,
        description="Progress and log events are written at most this often per job.",
    )
    subscriber_buffer: int = Field(
        default=1000,
        ge=10,
        le=1_000_000,
        description=(
            "Events buffered per subscriber: a job's subscriber is fed from the table as it drains"
            " it; a /ws/events subscriber that falls further behind is closed with 4409."
        ),
    )
    task_modules: Annotated[list[str], NoDecode] = Field(default_factory=list)
    process_pool_size: int | None = Field(
        default=None, ge=1, le=1024, description="Children of the task process pool; unset: the CPU count."
    )
    process_queues: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Queues whose every job runs in the task process pool."
    )
    process_warm_children: int = Field(
        default=0,
        ge=0,
        le=1024,
        description=(
            "Pool children started with a worker and replaced as they retire, so a job need not wait for"
            " a child's start (0: every child started on demand)."
        ),
    )
    process_max_tasks_per_child: int = Field(
        default=0, ge=0, description="A pool child is replaced after this many jobs (0: never)."
    )
    process_max_memory_mb_per_child: int = Field(
        default=0,
        ge=0,
        description="A pool child whose resident memory after a job is over this is replaced (0: never).",
    )
    fetch_max_bytes: int = Field(
        default=20 * 1024 * 1024, ge=1024, description="Largest response body fetch_api and scrape read."
    )
    fetch_allow_private: bool = Field(
        default=False, description="Let fetches reach loopback, private and link-local addresses."
    )
    fetch_allow_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Host names (or IPs) fetches may reach whatever they resolve to."
    )
    import_max_bytes: int = Field(
        default=1024 * 1024 * 1024, ge=1024, description="Largest CSV upload POST /imports accepts."
    )
    upload_body_timeout_s: float = Field(
        default=30.0, gt=0, le=3600, description="An upload whose client sends nothing this long is cut off."
    )
    pool_min_size: int = Field(default=2, ge=1, le=100)
    pool_max_size: int = Field(default=20, ge=1, le=500)
    task_pool_max_size: int = Field(
        default=10, ge=1, le=500, description="Connections of the pool tasks use (ctx.pool), opened on use."
    )
    # Limits on the engine's own connections, far above what a healthy system needs, so that a
    # half-open connection or a statement stuck behind a lock ends and the loop retries.
    db_connect_timeout_s: float = Field(default=10.0, gt=0, le=300)
    db_acquire_timeout_s: float = Field(
        default=10.0, gt=0, le=3600, description="Longest wait for a free pooled connection."
    )
    db_statement_timeout_s: float = Field(
        default=30.0, ge=0, le=86_400, description="statement_timeout of the engine's statements (0: none)."
    )
    db_lock_timeout_s: float = Field(
        default=10.0, ge=0, le=86_400, description="lock_timeout of the engine's statements (0: none)."
    )
    db_idle_in_transaction_timeout_s: float = Field(
        default=60.0,
        ge=0,
        le=86_400,
        description="A transaction left idle this long is ended (it holds back vacuum); 0: never. The "
        "engine's own are ended after lease_s at most (see db.pool.engine_limits).",
    )
    task_statement_timeout_s: float = Field(
        default=0.0, ge=0, le=86_400, description="statement_timeout of tasks' statements (0: none)."
    )
    auth: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="auto: keys required once one exists; open on loopback without keys; else refuse.",
    )
    jwt_secret: str | None = Field(default=None, description="Accept HS256 JWTs signed with this secret.")
    jwt_jwks_url: str | None = Field(default=None, description="Accept JWTs signed by these keys (RS/ES).")
    jwt_audience: str | None = Field(default=None, description="Required 'aud' of a JWT.")
    jwt_issuer: str | None = Field(default=None, description="Required 'iss' of a JWT.")
    jwt_scopes_claim: str = Field(default="scope", description="The JWT claim that holds its scopes.")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins browsers may call the API from; none by default."
    )
    rate_limit: str = Field(
        default="1000/second",
        pattern=r"^(off|[1-9][0-9]*/(second|minute|hour|day))$",
        description="Requests per key (or client address when open), e.g. 1000/second; off to disable.",
    )
    otel: Literal["auto", "on", "off"] = Field(
        default="auto", description="Tracing: auto is on when OTEL_EXPORTER_OTLP_ENDPOINT is set."
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"

    @field_validator(
        "queues", "task_modules", "process_queues", "fetch_allow_hosts", "cors_origins", mode="before"
    )
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("queues")
    @classmethod
    def _check_queue_specs(cls, value: list[str]) -> list[str]:
        for spec in value:
            parse_queue_spec(spec)
        return value

    @field_validator("process_queues")
    @classmethod
    def _check_queue_names(cls, value: list[str]) -> list[str]:
        for name in value:
            check_queue_name(name)
        return value

    @model_validator(mode="after")
    def _jwks_needs_an_audience(self) -> Settings:
        # A shared identity provider issues tokens for many apps: without an audience check, a token
        # meant for any of them would be accepted here.
        if self.jwt_jwks_url and not self.jwt_audience:
            raise ValueError("jwt_jwks_url needs jwt_audience (SKIPLOCK_JWT_AUDIENCE)")
        return self

    @model_validator(mode="after")
    def _a_pooler_needs_a_direct_url(self) -> Settings:
        # LISTEN through a transaction pooler subscribes one server session the pooler lends to
        # others: notifications would go to whoever holds it, and the migrations' lock would not hold.
        if self.database_pooler == "transaction" and not self.listen_database_url:
            raise ValueError(
                "database_pooler=transaction needs listen_database_url (SKIPLOCK_LISTEN_DATABASE_URL),"
                " a direct URL for LISTEN and migrations"
            )
        return self

    @property
    def transaction_pooler(self) -> bool:
        """database_url is a pooler in transaction mode."""
        return self.database_pooler == "transaction"

    def direct_database_url(self, dsn: str) -> str:
        """The URL of the sessions that need one (LISTEN, the heartbeat, migrations):
        listen_database_url, else ``dsn`` (the main URL, which may have been chosen at start: the
        embedded server's)."""
        return self.listen_database_url or dsn

    @property
    def jwt_enabled(self) -> bool:
        """JWT bearer tokens are accepted beside API keys."""
        return bool(self.jwt_secret or self.jwt_jwks_url)

    @classmethod
    def load(cls, **overrides: object) -> Settings:
        """Read the environment; a bad value raises ConfigError naming it, in one line."""
        try:
            return cls(**overrides)  # type: ignore[arg-type]
        except ValidationError as exc:
            problems = "; ".join(
                (f"SKIPLOCK_{'_'.join(str(p) for p in err['loc']).upper()}: " if err["loc"] else "")
                + err["msg"]
                for err in exc.errors()
            )
            raise ConfigError(f"invalid configuration: {problems}") from exc


#: In SKIPLOCK_QUEUES, every queue: the ones its tasks declare and any other that has jobs.
EVERY_QUEUE = "*"


class QueueSpec(NamedTuple):
    """One entry of SKIPLOCK_QUEUES: ``name[:limit][:global=N][:rate=N/unit]``."""

    name: str
    limit: int | None  # this process's concurrency for the queue
    global_concurrency: int | None = None  # declared for every process (see queue_declare_limits)
    rate: Rate | None = None


def parse_queue_declaration(spec: str) -> QueueSpec:
    """``"partner:4:global=5:rate=100/minute"`` → ``QueueSpec("partner", 4, 5, Rate(100, 60.0))``;
    ``"*"`` (or ``"*:4"``) stands for every queue, with no limits across replicas (those are a queue's)."""
    name, *options = spec.split(":")
    if name == EVERY_QUEUE:
        if len(options) > 1 or (options and (not options[0].isdigit() or int(options[0]) < 1)):
            raise ValueError(f"'*' takes a per-process limit only ('*:4'), not {spec!r}")
        return QueueSpec(name, int(options[0]) if options else None)
    check_queue_name(name)
    limit: int | None = None
    global_concurrency: int | None = None
    rate: Rate | None = None
    for place, option in enumerate(options):
        key, eq, value = option.partition("=")
        if not eq and place == 0:
            if not key.isdigit() or int(key) < 1:
                raise ValueError(f"queue limit must be a positive integer in {spec!r}")
            limit = int(key)
        elif key == "global" and value.isdigit() and int(value) <= 100_000:
            global_concurrency = int(value)
        elif key == "rate":
            rate = Rate.parse(value)
        else:
            raise ValueError(
                f"queue option {option!r} in {spec!r}: name[:limit][:global=N][:rate=N/unit] expected"
            )
    return QueueSpec(name, limit, global_concurrency, rate)


def parse_queue_spec(spec: str) -> tuple[str, int | None]:
    """``"media:2"`` → ``("media", 2)``; ``"default"`` → ``("default", None)``."""
    declared = parse_queue_declaration(spec)
    return declared.name, declared.limit
