"""`hub deliveries ...`: list deliveries, replay dead letters, run a dispatcher on its own.

Acts on the database in HUB_DATABASE_URL as the hub itself. Errors print a plain sentence
to stderr and exit 1.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from types import FrameType
from typing import TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from hub.audit.admin import record_admin
from hub.audit.recorder import Auditor
from hub.audit.signing import Signer
from hub.auth.subject import Subject
from hub.config import configure_logging, get_settings
from hub.db.engine import Database
from hub.db.migrate import migrated_database
from hub.delivery import service
from hub.delivery.dispatcher import Dispatcher
from hub.errors import DatabaseUnavailableError, HubError
from hub.store.dates import format_instant

deliveries_app = typer.Typer(help="Message deliveries: list, replay dead letters, dispatch.",
                             no_args_is_help=True)
HUB = Subject.hub_itself()
T = TypeVar("T")
out = Console(width=200, soft_wrap=True)
err = Console(stderr=True)


def _database() -> AbstractContextManager[Database]:
    return migrated_database(get_settings())


def _auditor() -> Auditor:
    settings = get_settings()
    return Auditor(Signer.from_file(settings.audit_key_file), base_url=settings.fhir_base)


def _run(fn: Callable[[Session], T], *, write: bool, audit_text: str | None = None) -> T:
    """Run `fn` in one transaction; a HubError becomes its sentence and exit code 1. With
    `audit_text` (an admin command), its admin record is written in the same transaction,
    or, when `fn` is refused, as refused in a transaction of its own (as `hub org add`)."""
    try:
        with _database() as database, database.session(write=write) as session:
            result = fn(session)
            if audit_text is not None:
                record_admin(session, _auditor(), audit_text, None)
            return result
    except HubError as exc:
        if audit_text is not None and not isinstance(exc, DatabaseUnavailableError):
            with _database() as database, database.session(write=True) as session:
                record_admin(session, _auditor(),
                             f"{audit_text} (refused: {exc.diagnostics})", None, failed=True)
        err.print(exc.diagnostics, markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


@deliveries_app.command("list")
def list_command(
    status: list[str] = typer.Option([], "--status", help="Only these statuses (repeatable): "
                                     "queued, delivered, acknowledged, withheld, dead-letter"),
    org: str | None = typer.Option(None, "--org", help="Only messages this organisation sent "
                                   "or received"),
    limit: int = typer.Option(200, "--limit", help="At most this many, newest first"),
) -> None:
    """Deliveries, newest first: id, message, sender, receiver, status, attempts, error."""
    rows = _run(lambda s: service.list_deliveries(s, HUB, statuses=status, organization=org,
                                                  limit=limit), write=False)
    table = Table("id", "message (MessageHeader.id)", "event", "sender", "receiver", "status",
                  "attempts", "created", "last error / reason")
    for item in rows:
        d, m = item.delivery, item.message
        table.add_row(str(d.id), m.header_id, m.event, m.sender_org, d.receiver_org, d.status,
                      str(d.attempts), format_instant(d.created_at),
                      d.last_error or (d.reason if d.status == "withheld" else "") or "")
    out.print(table)


@deliveries_app.command("replay")
def replay_command(
    ids: list[int] = typer.Argument(None, help="Delivery ids (see `hub deliveries list`)"),
    message: str | None = typer.Option(None, "--message",
                                       help="Every dead letter of this MessageHeader.id"),
    sender: str | None = typer.Option(None, "--sender", help="The message's sender "
                                      "(header ids are unique per sender)"),
) -> None:
    """Queue dead letters again, with a fresh max-age window; prints each replayed id."""
    if not ids and not message:
        err.print("Name delivery ids or --message HEADER_ID.")
        raise typer.Exit(2)
    text = "deliveries replay " + " ".join(
        [*map(str, ids or ()), *(f"--{k} {v}" for k, v in (("message", message),
                                                          ("sender", sender)) if v)])
    done = _run(lambda s: [d.id for d in service.replay(
        s, HUB, delivery_ids=ids or (), message_header_id=message, sender_org=sender,
        auditor=_auditor())], write=True, audit_text=text)
    for delivery_id in done:
        out.print(delivery_id)


@deliveries_app.command("run")
def run_command(
    threads: int = typer.Option(2, "--threads", help="Sweeper threads"),
) -> None:
    """Run the dispatcher in the foreground until SIGTERM or Ctrl-C (for a hub whose
    `hub serve` runs with HUB_DISPATCHER=false, or for more dispatching processes)."""
    stop = threading.Event()

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    configure_logging(get_settings())
    with _database() as database:
        settings = get_settings()
        auditor = Auditor(Signer.from_file(settings.audit_key_file), base_url=settings.fhir_base)
        dispatcher = Dispatcher(database, settings, threads=threads, auditor=auditor).start()
        err.print(f"dispatching (every {get_settings().delivery_poll_interval} s); "
                  "stop with Ctrl-C")
        try:
            while not stop.wait(0.5):
                pass
        finally:
            dispatcher.stop()
