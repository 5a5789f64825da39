"""`hub audit ...`: check the audit trail, export the public key (mounted by hub.cli).

`verify` exits 0 printing the number of intact records, or 1 printing
"broken at record <seq>: <reason>" (CONTRACT section 1).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TimeRemainingColumn

from hub.audit import verifications
from hub.audit.chain import verify
from hub.audit.signing import AuditKeyError, key_id, load_key, load_public_key, public_key_pem
from hub.config import get_settings
from hub.db.engine import Database
from hub.db.migrate import migrated_database
from hub.db.types import utcnow

audit_app = typer.Typer(help="The tamper-evident audit trail.", no_args_is_help=True)

PROGRESS_ABOVE = 10_000  # records; smaller trails verify in a blink


def _database() -> AbstractContextManager[Database]:
    return migrated_database(get_settings())


class _Bar:
    """A progress callback drawing a bar on stderr once the trail is big enough to wait for."""

    def __init__(self) -> None:
        self._bar: tuple[Progress, TaskID] | None = None

    def __call__(self, checked: int, total: int) -> None:
        if total <= PROGRESS_ABOVE:
            return
        if self._bar is None:
            progress = Progress("verifying", BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), console=Console(stderr=True),
                                transient=True)
            progress.start()
            self._bar = progress, progress.add_task("verify", total=total)
        progress, task = self._bar
        progress.update(task, completed=checked)

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self._bar is not None:
            self._bar[0].stop()


def _keys(extra: list[Path]) -> dict[str, Ed25519PublicKey]:
    keys: dict[str, Ed25519PublicKey] = {}
    own = Path(get_settings().audit_key_file)
    if own.exists():
        public = load_key(own).public_key()
        keys[key_id(public)] = public
    for path in extra:
        public = load_public_key(path.read_bytes())
        keys[key_id(public)] = public
    return keys


@audit_app.command("verify")
def verify_command(
    public_key: list[Path] = typer.Option(
        [], "--public-key", exists=True, dir_okay=False,
        help="PEM public key of another (e.g. an earlier) signing key; repeatable",
    ),
) -> None:
    """Check every record's hash link and signature; exit 1 naming the first broken record."""
    try:
        keys = _keys(public_key)
    except AuditKeyError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    with _database() as database:
        with _Bar() as bar:
            result = verify(lambda: database.session(write=False), keys, progress=bar)
        with database.session(write=True) as session:  # shown on the auditors' pages
            verifications.record(session, result, at=utcnow())
    if result.ok:
        typer.echo(f"{result.count} records intact")
        return
    where = f" at record {result.first_broken_seq}" if result.first_broken_seq else ""
    typer.echo(f"broken{where}: {result.reason}")
    raise typer.Exit(1)


@audit_app.command("public-key")
def public_key_command() -> None:
    """Print the public key (PEM) of HUB_AUDIT_KEY_FILE, for verifying the trail elsewhere."""
    try:
        private = load_key(get_settings().audit_key_file)
    except AuditKeyError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(public_key_pem(private.public_key()).decode("ascii"), nl=False)
