"""lipdub's settings: one pydantic-settings model, read only at entry points and passed down.

Sources, strongest first: arguments, environment (`LIPDUB_<SECTION>__<FIELD>`, plus
`WAVESPEED_API_KEY` for the key), a TOML file named by `LIPDUB_CONFIG_FILE` (start from
`configs/lipdub.toml`, which lists every setting with its default), then the defaults here.

    LIPDUB_PROVIDER__STARTS_PER_MINUTE=500 LIPDUB_STORAGE__BUCKET=my-bucket lipdub plan m.csv

An unknown `LIPDUB_` variable, an unknown key in the file or an invalid value stops the
program at start with a `SettingsError` naming the variable and what is allowed.
"""

from __future__ import annotations

import difflib
import os
from decimal import Decimal
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from pipeline.errors import SettingsError
from pipeline.notice_urls import NoticeUrl, unusable
from pipeline.pricing import PriceModel
from pipeline.send_order import SendOrder
from pipeline.sync_modes import DEFAULT_SYNC_MODE, SyncMode

ENV_PREFIX = "LIPDUB_"
PROVIDER_MIN_POLL_S = 5.0
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
EVEN_PACING_MARGIN_S = 1.0
"""Even pacing's default margin: its starts are planned, never timed from an answer."""
NESTED_DELIMITER = "__"
CONFIG_FILE_VARIABLE = "LIPDUB_CONFIG_FILE"
API_KEY_VARIABLE = "WAVESPEED_API_KEY"


class _Section(BaseModel):
    # Attribute docstrings are docs/configuration.md's settings table (`pipeline.settings_doc`
    # reads them from the source: pydantic's use_attribute_docstrings costs every import).
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderSettings(_Section):
    """Where the provider is, how long to wait for it, and the account's limits.

    Account levels (WaveSpeed): Bronze 2 starts/min and 2 concurrent; Silver 500 and 300;
    Gold 3,000 and 3,000; Ultra 5,000 and 10,000. The default is Bronze: the safe floor.
    """

    base_url: str = "https://api.wavespeed.ai"
    """The WaveSpeed API (or a sandbox: http:// is allowed on this machine only)."""
    model_path: str = "sync/lipsync-3"
    """The model every item is submitted to."""
    api_key: SecretStr | None = None
    """The API key; `WAVESPEED_API_KEY` is read too. A secret: never logged or reported."""
    connect_timeout_s: float = Field(default=10.0, gt=0)
    """Seconds to wait for a connection to the provider."""
    read_timeout_s: float = Field(default=30.0, gt=0)
    """Seconds to wait for an answer to a read (result, list)."""
    submit_timeout_s: float = Field(default=60.0, gt=0)
    """Seconds to wait for the submit's answer; after that its outcome is reconciled, never re-posted."""
    max_get_attempts: int = Field(default=4, ge=1, le=20)
    """Tries of a safe call made outside a worker (the CLI's balance, quotes, list and audit;
    the receiver's webhook secret). Workers never retry in-process: they reschedule."""
    retry_base_delay_s: float = Field(default=0.5, gt=0)
    """First back-off between those tries, doubled each time."""
    retry_max_delay_s: float = Field(default=8.0, gt=0)
    """Longest back-off between those tries."""
    starts_per_minute: int = Field(default=2, ge=1)
    """The account's submits per `rate_window_s` (Bronze 2, Silver 500, Gold 3,000, Ultra 5,000)."""
    rate_window_s: float = Field(default=60.0, gt=0)
    """The window `starts_per_minute` counts over: 60 for the real service (tests shrink it)."""
    start_margin_s: float | None = Field(default=None, ge=0)
    """Added to the window so jitter never puts N+1 starts in one provider window. Unset: none
    with `window` pacing (each start is timed again from its POST's answer, which comes after
    the provider counted it), 1 s with `even` pacing (planned starts, nothing to time from)."""
    start_pacing: Literal["window", "even"] = "window"
    """`window`: up to `starts_per_minute` at once, then wait for the window; `even`: one every
    window / `starts_per_minute` (for a provider whose bucket holds a single start)."""
    max_concurrent: int = Field(default=2, ge=1)
    """The account's predictions processing at once (Bronze 2, Silver 300, Gold 3,000, Ultra 10,000)."""
    queue_ahead: int | None = Field(default=None, ge=0)
    """Predictions sent beyond `max_concurrent`, which the provider queues (documented: a third
    on Bronze "will wait until one finishes") and starts the moment one of ours ends, so no
    slot idles while lipdub sees an end and sends the next. Unset: as many as `max_concurrent`.
    While at most four of its places are free they are sent one at a time, in the send order:
    the provider starts its queue in the order the POSTs arrived (`pipeline.gates`, the turn).
    Each waits at most about one processing time; a cancel cannot stop them (they run and are
    paid, and collected). Held (only `max_concurrent` in flight) while a submit's answer is
    lost and not yet reconciled. 0: only `max_concurrent` in flight."""
    polls_per_second: float = Field(default=5.0, gt=0)
    """Result requests per second, shared by every worker."""
    clock_skew_s: float = Field(default=5.0, ge=0)
    """How far the provider's clock may be from ours: a lost submit's prediction is looked for among those created while the POST was on its way, give or take this."""
    cooldown_default_s: float = Field(default=10.0, gt=0)
    """How long every worker holds off after a 429 that names no Retry-After."""
    webhook_url: str | None = None
    """Where the provider should POST completion webhooks (`lipdub webhooks` listens; polling stays the safety net)."""
    webhook_secret: SecretStr | None = None
    """The account's webhook signing secret (`whsec_...`); unset: `lipdub webhooks` asks the provider for it. A secret."""

    @property
    def start_window_s(self) -> float:
        """The window `starts_per_minute` are kept within: `rate_window_s` and the margin."""
        if self.start_margin_s is not None:
            return self.rate_window_s + self.start_margin_s
        return self.rate_window_s + (EVEN_PACING_MARGIN_S if self.start_pacing == "even" else 0.0)

    @property
    def in_flight_max(self) -> int:
        """Predictions lipdub keeps sent and not final: processing plus queued ahead."""
        ahead = self.max_concurrent if self.queue_ahead is None else self.queue_ahead
        return self.max_concurrent + ahead

    @property
    def is_local(self) -> bool:
        """True when the provider is on this machine (the sandbox)."""
        host = urlsplit(self.base_url).hostname or ""
        return host in LOOPBACK_HOSTS

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must start with https:// (or http:// for a local sandbox)")
        return value.rstrip("/")


class StorageSettings(_Section):
    """The S3 bucket that holds inputs, outputs and reports."""

    bucket: str = "lipdub"
    """The bucket for inputs (`media/`), outputs (`outputs/`) and reports (`reports/`)."""
    retry_for_s: float = Field(default=600.0, ge=0)
    """How long an item keeps retrying while storage fails (its upload, its output's copy, the provider's download of its inputs) before it fails: an S3 outage shorter than this loses nothing."""
    prefix: str = ""
    """A key prefix inside the bucket, e.g. `lipdub/`."""
    endpoint_url: str | None = None
    """An S3-compatible endpoint (MinIO, moto); unset for AWS."""

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None  # an empty variable means unset: AWS itself
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be a URL such as https://minio.example:9000 (or empty for AWS)")
        return value.strip()

    region: str = "us-east-1"
    """The bucket's region."""
    presign_expiry_s: int = Field(default=86_400, ge=60, le=604_800)
    """Lifetime of the input URLs given to the provider; must cover `item_deadline_s`."""
    multipart_threshold_mb: int = Field(default=16, ge=5)
    """Uploads larger than this go in parts; a worker holds about twice this in memory per transfer."""
    upload_files_at_once: int = Field(default=4, ge=1, le=32)
    """Local inputs `lipdub run` puts in the bucket at once before a batch starts (each holds up to 32 MB of parts in memory)."""


class RedisSettings(_Section):
    """Redis holds the ledger and the shared gates; the broker defaults to the same server."""

    url: str = "redis://localhost:6379/0"
    """The Redis that holds the ledger and the shared limits (run it with AOF persistence)."""
    broker_url: str | None = None
    """The Celery broker, when not the same Redis."""

    @property
    def effective_broker_url(self) -> str:
        """The Celery broker URL: `broker_url`, or the ledger's Redis."""
        return self.broker_url or self.url


class Durability(StrEnum):
    """How a submit's intent is made durable before its POST (`pipeline.durability`)."""

    AUTO = "auto"
    """The strongest the ledger's Redis offers: `aof`, else `replica`; refuse when neither."""
    AOF = "aof"
    """Wait for the local AOF fsync (WAITAOF, Redis/Valkey 7.2+), or `appendfsync always`."""
    REPLICA = "replica"
    """Wait for `replicas` replicas to hold the write (WAIT): survives the primary's host if
    the failover promotes one of them."""
    NONE = "none"
    """Do not wait. A crash of the Redis host can lose the last second of writes, and a
    submit whose intent was lost is paid again (the audit finds it; you pay it)."""


class LedgerSettings(_Section):
    """How safe the ledger's writes are before lipdub pays: checked when a worker starts."""

    durability: Durability = Durability.AUTO
    """`auto`, `aof`, `replica` or `none` (docs/operations.md: Durable intent)."""
    replicas: int = Field(default=1, ge=1, le=16)
    """With `replica`: how many replicas must hold a submit's intent before its POST."""
    retention_days: float = Field(default=7.0, ge=0)
    """A finished batch's completed items shrink to their id, state, prediction, output and
    cost this long after it finished (its full report stays in the bucket), then lapse with
    their pairs' claims (`worker.content_ttl_days`)."""
    durable_timeout_s: float = Field(default=5.0, gt=0, le=60)
    """How long a submit waits for its intent to be durable; past it, nothing is posted
    (the item is submitted again later)."""
    paid_write_hold_s: float = Field(default=60.0, ge=0, le=600)
    """How long a worker that has a paid POST's answer keeps trying to record its prediction
    id while Redis cannot be reached (a restart, a failover); past it, reconcile finds it."""


class PollingSettings(_Section):
    """Never closer than 5 s apart (the provider's guidance); how looks are aimed: see below.

    With `learn`, each first check goes where the provider's recent predictions say this one
    is seen soonest after it ends (then every 5 s while it is within their range); before
    anything is learned, three scouts look early and often and the others wait for them.
    Past every expectation the wait grows by `growth_factor` up to `max_interval_s`.
    Intervals under 5 s are accepted only for a provider on this machine.
    """

    first_poll_min_s: float = Field(default=5.0, gt=0)
    """The earliest first check after a submit (at least 5 s against the real provider)."""
    growth_factor: float = Field(default=1.5, ge=1.0, le=4.0)
    """Past every expectation, each check waits this much longer than the one before (never more than half the prediction's age)."""
    max_interval_s: float = Field(default=60.0, gt=0)
    """The longest wait between two checks of one prediction (once it may have started: one sent into the provider's queue waits for that first)."""
    watch_every_s: float = Field(default=1.0, ge=0)
    """While predictions run, one list call for the whole account this often finds those that ended (completed or failed), and each is looked at at once (the scheduled looks stay the safety net); 0 turns it off."""
    learn: bool = True
    """Aim each first check at the time the provider has been taking (learned from its recent
    predictions' own processing times, per model and sync mode); until there are three, three
    scouts look early and the expectation below applies to the rest."""
    expected_fixed_s: float = Field(default=20.0, ge=0)
    """Expected processing time: this fixed part ..."""
    expected_per_video_s: float = Field(default=1.0, ge=0)
    """... plus this much per second of video; the first check comes then."""
    item_deadline_s: float = Field(default=7_200.0, gt=0)
    """An item not finished this long after its submit fails `timeout` (its prediction id is kept)."""
    reconcile_grace_s: float = Field(default=30.0, gt=0)
    """How long the list call must go on not showing a submit before it counts as not made."""
    reconcile_max_wait_s: float = Field(default=1_800.0, gt=0)
    """How long reconcile waits for evidence (a lost submit's candidates to finish, another POST's answer) before a person is asked."""


class NotifySettings(_Section):
    """Where a notice goes when a batch finishes (`lipdub run --notify URL` adds to it)."""

    urls: list[SecretStr] = Field(default_factory=list)
    """Apprise URLs, a JSON list: `https://hooks.slack.com/services/…` or `slack://…`, `mmost://…`, `json://host/path` (a generic JSON webhook), `mailto://…`. Secrets."""

    @field_validator("urls")
    @classmethod
    def _apprise_knows(cls, urls: list[SecretStr]) -> list[SecretStr]:
        for n, url in enumerate(urls):
            if why := unusable(url.get_secret_value()):
                raise ValueError(f"URL #{n + 1}: {why}")
        return urls


class LogFormat(StrEnum):
    """How the long-running commands (worker, beat, webhooks, sandbox) write their logs."""

    TEXT = "text"
    """One line per record: time, level, logger, message."""
    JSON = "json"
    """One JSON object per line (time, level, logger, process, message), for a log pipeline."""


class LogSettings(_Section):
    """The long-running commands' logs."""

    format: LogFormat = LogFormat.TEXT
    """`text` or `json`."""


class WorkerSettings(_Section):
    """Celery: time limits, the longest countdown, and the broker's visibility timeout.

    A task reserved but not acknowledged is redelivered after `visibility_timeout_s`; it must
    exceed the time limit, or a running task would run twice. (Countdowns wait in Redis, not
    in the broker: `pipeline.due`. A dead worker's steps come back through its lapsed
    heartbeat within a minute, not through this timeout.)
    """

    task_time_limit_s: int = Field(default=1_800, ge=10)
    """Celery's hard time limit for one task."""
    task_soft_time_limit_s: int = Field(default=1_700, ge=5)
    """Celery's soft time limit (below the hard one)."""
    max_countdown_s: float = Field(default=300.0, ge=1)
    """The longest countdown a task is scheduled with; longer waits ask again."""
    visibility_timeout_s: int = Field(default=3_600, ge=12)
    """Redis redelivers an unacknowledged task after this (also how long the tasks of a worker that died without warning wait); must exceed the longest countdown plus the hard time limit."""
    max_attempts: int = Field(default=3, ge=1, le=10)
    """Submissions of one item when the provider fails it for a transient reason."""
    retry_delay_s: float = Field(default=30.0, ge=0)
    """Wait before submitting again after a transient provider failure."""
    queue: str = "lipdub"
    """The Celery queue workers consume and tasks are sent to."""
    sweep_interval_s: float = Field(default=60.0, ge=1)
    """How often a worker looks for steps whose message was lost (one worker at a time)."""
    queue_window: int = Field(default=200, ge=1)
    """How many uploads (prepare steps) may wait in the broker at once; a batch's others wait
    in Redis as ids and are handed over as room frees, so a 100,000-item batch does not put
    100,000 messages in the broker."""
    task_events: bool = True
    """Send Celery's task events (what Flower shows: each step, its batch and item, how long
    it ran); off saves four event messages per step (sent, received, started, succeeded), about
    a tenth of the workers' and Redis's CPU per item (docs/performance.md, row 5)."""
    lost_step_after_s: float = Field(default=120.0, ge=1)
    """A step expected this long ago that nobody runs, not kept for later, with the queue
    empty, was lost in flight (a broker restart): it is sent again."""
    content_ttl_days: int = Field(default=30, ge=1)
    """How long a completed pair's output is remembered for reuse by later batches."""

    @model_validator(mode="after")
    def _consistent(self) -> WorkerSettings:
        if self.task_soft_time_limit_s >= self.task_time_limit_s:
            raise ValueError("task_soft_time_limit_s must be below task_time_limit_s")
        # A task is acknowledged after it ran (acks_late): it may wait out its countdown and
        # then run up to the hard limit, all that time unacknowledged.
        longest = self.task_time_limit_s + self.max_countdown_s
        if self.visibility_timeout_s <= longest:
            raise ValueError(
                f"visibility_timeout_s must exceed task_time_limit_s + max_countdown_s "
                f"({longest:g} s), or waiting tasks are delivered twice"
            )
        return self


class BudgetSettings(_Section):
    """Spending limits. `batch_usd` unset means no limit; above `confirm_above_usd` a run asks."""

    batch_usd: Decimal | None = Field(default=None, ge=0)
    """A batch whose estimate is over this is refused (unset: no limit)."""
    confirm_above_usd: Decimal = Field(default=Decimal("10"), ge=0)
    """`lipdub run` asks before starting a batch estimated above this (`--yes` skips)."""


class MediaSettings(_Section):
    """Limits checked before any spend, and where probe results are cached."""

    max_duration_s: float = Field(default=600.0, gt=0)
    """Longest accepted input, in seconds."""
    max_width: int = Field(default=4096, ge=16)
    """Widest accepted video, in pixels."""
    max_height: int = Field(default=2160, ge=16)
    """Tallest accepted video, in pixels."""
    max_file_size_mb: int = Field(default=2048, ge=1)
    """Largest accepted input file."""
    allow_http_urls: bool = False
    """Accept plain `http://` inputs (`https://` and `s3://` always are)."""
    probe_timeout_s: float = Field(default=30.0, gt=0)
    """Seconds to read a remote input's header while planning."""
    cache_dir: Path = Path("~/.cache/lipdub")
    """Where file hashes and probe results are cached."""

    @property
    def max_file_size_bytes(self) -> int:
        """`max_file_size_mb` in bytes."""
        return self.max_file_size_mb * 1024 * 1024

    @property
    def cache_path(self) -> Path:
        """`cache_dir` with `~` expanded."""
        return self.cache_dir.expanduser()


class BatchSettings(_Section):
    """Defaults for a batch."""

    default_sync_mode: SyncMode = DEFAULT_SYNC_MODE
    """The sync_mode of rows that name none."""
    send_order: SendOrder = "longest_first"
    """The order items are sent to the provider in: `longest_first` (the longest videos first, so that short ones fill the slots at the end and the batch ends sooner) or `manifest` (the rows' order: urgent rows first, or a partial budget spent on the first rows). The report lists items by row either way."""


class ScheduleSettings(_Section):
    """Overnight schedules (`lipdub beat`): where they are defined and how beat runs them."""

    file: Path = Path("configs/schedule.yaml")
    """The schedules file (see configs/schedule.yaml); a missing file means no schedules."""
    yaml: str = ""
    """The schedules as YAML text, instead of the file (for environments without files)."""
    tick_s: float = Field(default=30.0, ge=0.5, le=600)
    """How often beat checks the schedules (fire times, windows opening)."""
    lock_timeout_s: float = Field(default=90.0, ge=1.5)
    """A beat that stops renewing its lock for this long is replaced by a standby beat."""
    inbox_settle_s: float = Field(default=10.0, ge=0)
    """A dropped manifest is picked up once it has not changed for this long (still copying)."""
    pickup_lease_s: float = Field(default=900.0, ge=10)
    """How long a pickup may take before another run takes it over (it died mid-pickup)."""
    notify_url: NoticeUrl | None = None
    """Where the schedules' notices go (an apprise URL, as `notify.urls`); a schedule may name its own. A secret."""

    notify_timeout_s: float = Field(default=10.0, gt=0)
    """Seconds to wait for a notice's service (every notice, scheduled or not); a failed one is tried again, never blocking a batch."""

    @model_validator(mode="after")
    def _lock_outlives_ticks(self) -> ScheduleSettings:
        if self.lock_timeout_s < 3 * self.tick_s:
            raise ValueError(
                f"lock_timeout_s ({self.lock_timeout_s}) must be at least 3 × tick_s "
                f"({self.tick_s}): the active beat renews its lock once per tick"
            )
        return self


class PriceSettings(PriceModel):
    """The price model (see pipeline.pricing): rate, basis, rounding, minimum."""


class _ApiKeySource(PydanticBaseSettingsSource):
    """Reads WAVESPEED_API_KEY, the name the official SDK uses, into provider.api_key."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        key = os.environ.get(API_KEY_VARIABLE)
        return {"provider": {"api_key": key}} if key else {}


class Settings(BaseSettings):
    """Every setting of lipdub. Build with `load_settings()` to get readable errors."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    provider: ProviderSettings = ProviderSettings()
    storage: StorageSettings = StorageSettings()
    redis: RedisSettings = RedisSettings()
    ledger: LedgerSettings = LedgerSettings()
    log: LogSettings = LogSettings()
    notify: NotifySettings = NotifySettings()
    polling: PollingSettings = PollingSettings()
    price: PriceSettings = PriceSettings()
    budget: BudgetSettings = BudgetSettings()
    media: MediaSettings = MediaSettings()
    batch: BatchSettings = BatchSettings()
    worker: WorkerSettings = WorkerSettings()
    schedule: ScheduleSettings = ScheduleSettings()

    @model_validator(mode="after")
    def _polling_within_guidance(self) -> Settings:
        if not self.provider.is_local:
            for name in ("first_poll_min_s", "max_interval_s"):
                if getattr(self.polling, name) < PROVIDER_MIN_POLL_S:
                    raise ValueError(
                        f"LIPDUB_POLLING__{name.upper()} must be at least {PROVIDER_MIN_POLL_S:g} s for "
                        "the real provider (its guidance); shorter is allowed only for a "
                        "local sandbox"
                    )
        if self.storage.presign_expiry_s < self.polling.item_deadline_s:
            raise ValueError(
                "LIPDUB_STORAGE__PRESIGN_EXPIRY_S must cover LIPDUB_POLLING__ITEM_DEADLINE_S: the provider "
                "may fetch the inputs only when the item leaves its queue"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            env_settings,
            _ApiKeySource(settings_cls),
        ]
        config_file = os.environ.get(CONFIG_FILE_VARIABLE)
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


def setting_names() -> dict[str, tuple[str, str]]:
    """Every environment variable lipdub reads: `LIPDUB_SECTION__FIELD` -> (section, field)."""
    names: dict[str, tuple[str, str]] = {}
    for section, info in Settings.model_fields.items():
        model = info.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        for field in model.model_fields:
            names[f"{ENV_PREFIX}{section.upper()}{NESTED_DELIMITER}{field.upper()}"] = (
                section,
                field,
            )
    return names


def env_name(loc: tuple[int | str, ...]) -> str:
    """The environment variable for a validation error location, e.g. LIPDUB_PROVIDER__BASE_URL."""
    parts = [str(p).upper() for p in loc if not isinstance(p, int)]
    if not parts:
        return ENV_PREFIX.rstrip("_")
    return ENV_PREFIX + NESTED_DELIMITER.join(parts)


def unknown_variables(environ: dict[str, str]) -> list[str]:
    """`LIPDUB_` variables in `environ` that no setting reads, each with a suggestion."""
    known = set(setting_names()) | {CONFIG_FILE_VARIABLE}
    problems = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known:
            continue
        close = difflib.get_close_matches(upper, sorted(known), n=1, cutoff=0.7)
        hint = f" Did you mean {close[0]}?" if close else ""
        problems.append(f"{name}: not a lipdub setting.{hint} See configs/.env.example.")
    return problems


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the environment, or raise SettingsError listing every problem.

    `overrides` are section objects or dicts that win over every other source (the CLI's
    flags), e.g. `load_settings(budget={"batch_usd": "50"})`.
    """
    problems = unknown_variables(dict(os.environ))
    config_file = os.environ.get(CONFIG_FILE_VARIABLE)
    if config_file and not Path(config_file).is_file():
        problems.append(
            f"{CONFIG_FILE_VARIABLE}: no file at {config_file!r}. "
            "Point it at a TOML file such as configs/lipdub.toml, or unset it."
        )
    if problems:
        raise SettingsError("invalid settings:\n" + "\n".join(f"  - {p}" for p in problems))
    try:
        return Settings(**overrides)
    except ValidationError as err:
        raise SettingsError(format_validation_error(err)) from None


def format_validation_error(err: ValidationError) -> str:
    """One line per invalid value: the variable's name, what is allowed, what was given.

    The given value is never shown for secrets.
    """
    lines = []
    for item in err.errors():
        loc = tuple(item.get("loc", ()))
        name = env_name(loc)
        given = item.get("input")
        secret = any(
            word in str(p).lower() for p in loc for word in ("key", "secret", "notify", "urls")
        )
        shown = "" if secret or isinstance(given, dict) else f" (got {given!r})"
        message = item.get("msg", "invalid")
        if item.get("type") == "extra_forbidden":
            message = "not a lipdub setting"
        lines.append(f"  - {name}: {message}{shown}")
    return "invalid settings:\n" + "\n".join(lines)


def to_environment(settings: Settings) -> dict[str, str]:
    """The settings as `LIPDUB_` environment variables, e.g. to configure a worker process.

    The result holds the API key in clear: hand it to a child process, never to a log.
    """
    env: dict[str, str] = {}
    for section, model in settings:
        for field, value in model:
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            text = str(value.value) if isinstance(value, Enum) else str(value)
            env[f"{ENV_PREFIX}{section.upper()}{NESTED_DELIMITER}{field.upper()}"] = text
    return env
