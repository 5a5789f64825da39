"""Settings, all from `HUB_*` environment variables (see README for the list and defaults)."""

from __future__ import annotations

import logging.config
from functools import lru_cache
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the hub. Durations are in seconds, sizes in bytes."""

    model_config = SettingsConfigDict(env_prefix="HUB_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///./carehub.db",
        description="SQLAlchemy URL: sqlite:///path or postgresql+psycopg://user@host/db",
    )
    base_url: str = Field(
        default="http://127.0.0.1:8080",
        description="Public base URL of the hub; the FHIR base is this plus /fhir",
    )
    host: str = Field(default="127.0.0.1", description="Address `hub serve` listens on")
    port: int = Field(default=8080, description="Port `hub serve` listens on")
    max_body_bytes: int = Field(
        default=5 * 1024 * 1024, description="Largest request body accepted (413 above)"
    )
    page_size: int = Field(default=20, description="Search results per page without _count")
    max_page_size: int = Field(default=500, description="Largest _count honoured")
    db_pool_size: int = Field(default=10, description="Database connections per hub process")
    db_prepare: bool = Field(
        default=True,
        description="PostgreSQL: the message path's fixed statements are prepared once per "
        "connection (hub/db/direct.py). false: nothing is prepared, for a pooler that "
        "cannot keep prepared statements (PgBouncer in transaction mode before 1.21, or "
        "without max_prepared_statements)",
    )
    write_concurrency: int | None = Field(
        default=None, ge=0,
        description="FHIR write requests (messages, REST and UI writes; not sign-in or token "
        "requests) one hub process works on at once; more wait their turn without a thread, "
        "so that reads keep their share of the CPU under a burst of messages. 0: no limit. "
        "Unset: 1 on PostgreSQL, no limit on SQLite (whose writers queue for its one write "
        "lock anyway, and share commits). This many while the process serves a read; see "
        "write_burst for while it serves none (hub/api/turns.py)",
    )
    write_burst: int | None = Field(
        default=None, ge=0,
        description="FHIR write requests one hub process works on at once while it serves no "
        "read (a burst of messages with nobody reading), when write_concurrency limits them; "
        "never fewer than write_concurrency. Unset: 4 on PostgreSQL when write_concurrency is "
        "unset too, else write_concurrency",
    )
    write_backlog: int = Field(
        default=64, ge=0,
        description="FHIR write requests one hub process holds at once, working or waiting "
        "for a turn; one more is answered 503 with Retry-After at once instead of waiting "
        "behind them (an overload is shed, not queued without end). 0: no bound",
    )
    sqlite_busy_timeout: float = Field(
        default=30.0, description="Seconds an SQLite writer waits for the lock"
    )
    token_lifetime: int = Field(
        default=300, gt=0, description="Seconds an access token lives (at most 300)"
    )
    auth_clock_skew: int = Field(
        default=60, ge=0, description="Seconds of clock difference tolerated in client assertions"
    )
    signin_max_failures: int = Field(
        default=5, description="Wrong passwords in a row before a /ui account is paused"
    )
    signin_lockout: int = Field(
        default=300, description="Seconds a /ui account stays paused after too many failures"
    )
    session_lifetime: int = Field(
        default=28800, description="Seconds a /ui web session lasts after sign-in"
    )
    trust_forwarded_proto: bool = Field(
        default=False,
        description="Trust X-Forwarded-Proto: https from a TLS proxy (marks cookies Secure)",
    )
    audit_key_file: str = Field(
        default="./carehub-audit-key.pem",
        description="Ed25519 private key signing the audit trail; created with mode 0600 on "
        "first run if missing",
    )
    audit_trusted_keys: str = Field(
        default="",
        description="PEM public keys (file paths, comma-separated) of earlier audit keys whose "
        "records and checkpoints still verify and seal (key rotation)",
    )
    sealer: bool = Field(
        default=True, description="Run the audit sealer inside `hub serve`"
    )
    seal_interval: float = Field(
        default=1.0, gt=0, description="Seconds between seals of the audit trail"
    )

    legal_basis_events: str = Field(
        default="admission-notice,ready-for-discharge,ready-for-discharge-withdrawn,"
        "admission-cancelled",
        description="Events with a statutory basis (administrative content only), comma-separated",
    )
    delivery_max_age: int = Field(
        default=72 * 3600, description="Seconds a push delivery is retried before dead letter"
    )
    delivery_first_retry: float = Field(
        default=5.0, description="Seconds before the first retry (doubling, with jitter)"
    )
    delivery_timeout: float = Field(
        default=10.0, description="Seconds a push attempt may take"
    )
    delivery_per_receiver: int = Field(
        default=8, ge=1,
        description="Push attempts one dispatcher process has under way to one receiver at "
        "once; its other due deliveries wait their turn, so a receiver that hangs holds at "
        "most this many of the process's senders (2 sweepers x 16)",
    )
    delivery_poll_interval: float = Field(
        default=1.0, description="Seconds between dispatcher sweeps of due deliveries"
    )
    workers: int = Field(
        default=1, description="Worker processes `hub serve` runs (SQLite: writes take turns)"
    )
    dispatcher: bool = Field(
        default=True, description="Run the delivery dispatcher inside `hub serve`"
    )

    # --- adapters (adapters/, CONTRACT section 10) ---
    mllp_port: int | None = Field(
        default=None,
        description="Port `hub serve` takes HL7 v2 ADT on over MLLP (unset: no MLLP listener)",
    )
    mllp_host: str = Field(default="127.0.0.1", description="Address the MLLP listener binds")
    mllp_max_bytes: int = Field(
        default=5 * 1024 * 1024, gt=0, description="Largest HL7 v2 message taken over MLLP"
    )
    smtp_url: str | None = Field(
        default=None,
        description="SMTP server for e-mail notices: smtp://, smtp+starttls:// or smtps:// "
        "(unset: no e-mail)",
    )
    notify_interval: float = Field(
        default=3600.0, gt=0, description="Seconds: at most one e-mail notice per person"
    )
    notify_from: str = Field(
        default="CareHub <carehub@localhost>", description="From address of e-mail notices"
    )

    # --- timed checks (hub/scheduler/, CONTRACT section 7) ---
    scheduler: bool = Field(
        default=True, description="Run the timed checks' scheduler inside `hub serve`"
    )
    scheduler_interval: float = Field(
        default=60.0, gt=0, description="Seconds between sweeps of due timed checks"
    )
    scheduler_batch: int = Field(
        default=200, gt=0, description="Due checks acted on per transaction of a sweep"
    )
    timezone: str = Field(
        default="Europe/Oslo",
        description="Zone of calendar days (a contact on the discharge day does not count)",
    )
    follow_up_first_contact: int = Field(
        default=72 * 3600, description="Seconds after discharge the first contact is due by"
    )
    follow_up_first_contact_suicide_risk: int = Field(
        default=48 * 3600,
        description="Seconds after discharge the first contact is due by with suicide risk",
    )
    follow_up_second_check: int = Field(
        default=7 * 86400, description="Seconds after discharge of the second follow-up check"
    )
    follow_up_third_check: int = Field(
        default=30 * 86400, description="Seconds after discharge of the third follow-up check"
    )
    reply_basis_events: str = Field(
        default="meeting-response,discharge-readiness-response,self-admission-response,"
        "self-admission-request,follow-up-contact",
        description="Events that go back, without consent, to the organisation whose message "
        "they answer (legal basis reply), comma-separated",
    )
    follow_up_legal_basis: str = Field(
        default="helsepersonelloven-45",
        description="Legal basis code under which the hub's own notices go without consent "
        "(empty: consent only)",
    )
    notice_legal_basis_events: str = Field(
        default="follow-up-overdue,discharge-readiness-overdue,consent-expiring,"
        "delivery-unacknowledged",
        description="The hub's own notices that HUB_FOLLOW_UP_LEGAL_BASIS covers, comma-separated",
    )
    discharge_readiness_timeout: int = Field(
        default=24 * 3600, description="Seconds a ready-for-discharge may go unanswered"
    )
    meeting_reminder: int = Field(
        default=24 * 3600, description="Seconds before a meeting's start its reminder goes"
    )
    consent_expiry_notice: int = Field(
        default=7 * 86400, description="Seconds before a consent ends its custodian is told"
    )
    ack_timeout: int = Field(
        default=24 * 3600,
        description="Seconds a delivered message may go unacknowledged before its sender is "
        "told (0: off)",
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="WARNING",
        description="Least level of the log lines `hub serve` and `hub mllp` write to stderr, "
        "each with its time, level, logger and process id (uvicorn's access log is apart)",
    )

    @property
    def fhir_base(self) -> str:
        """Absolute FHIR base URL, without a trailing slash."""
        return self.base_url.rstrip("/") + "/fhir"


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
QUIET_LIBRARIES = ("alembic", "apscheduler", "httpx", "httpcore")
"""Libraries whose INFO lines are routine (each migration step, each scheduled run, each
HTTP request the dispatcher makes): shown from WARNING up unless HUB_LOG_LEVEL is DEBUG."""


def logging_config(settings: Settings) -> dict[str, Any]:
    """A logging.config.dictConfig for a hub process: its own lines (and any library's at
    least as grave) on stderr with time, level, logger and process id, which is what an
    operator reading a failed delivery or a crashed sweep needs. At INFO the hub's own
    lines, not the QUIET_LIBRARIES' routine; at DEBUG everything. uvicorn's loggers are left
    to uvicorn."""
    quiet = {"DEBUG": "DEBUG", "INFO": "WARNING"}.get(settings.log_level, settings.log_level)
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"hub": {"format": LOG_FORMAT}},
        "handlers": {"hub": {"class": "logging.StreamHandler", "formatter": "hub",
                             "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["hub"], "level": settings.log_level},
        "loggers": {name: {"level": quiet} for name in QUIET_LIBRARIES},
    }


def configure_logging(settings: Settings) -> None:
    """Set up this process's logging (`logging_config`); for the long-running commands."""
    logging.config.dictConfig(logging_config(settings))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
