"""`hub audit ...`: check the audit trail, prove records, export checkpoints for a witness,
seal, export the public key (mounted by hub.cli).

`verify` exits 0 printing the number of intact records, or 1 printing
"broken at record <seq>: <reason>" (or "broken at leaf <n>: ..." when the record there is
gone) (CONTRACT section 1). Every command that fails prints one sentence and exits 1.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import TracebackType

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TimeRemainingColumn

from hub.audit import copies, verifications
from hub.audit.checkpoint import Checkpoint, CheckpointError
from hub.audit.models import AuditRecordRow
from hub.audit.records import event_id_of
from hub.audit.seal import Sealer, SealError, seal_all
from hub.audit.signing import (
    AuditKeyError,
    Signer,
    key_id,
    load_key,
    load_public_key,
    public_key_pem,
    public_keys_from,
)
from hub.audit.spool import ReadAudit
from hub.audit.tree import (
    TreeError,
    checkpoint_at,
    consistency_proof,
    inclusion_proof,
    latest_checkpoint,
)
from hub.audit.verify import check_record, verify
from hub.config import get_settings
from hub.db.engine import Database
from hub.db.migrate import migrated_database
from hub.db.types import utcnow
from hub.errors import DatabaseUnavailableError

audit_app = typer.Typer(help="The tamper-evident audit trail.", no_args_is_help=True)

PROGRESS_ABOVE = 10_000  # records; smaller trails verify in a blink


@contextmanager
def _database() -> Iterator[Database]:
    """The trail's database; one that cannot be reached or opened is one line, exit 1."""
    try:
        with migrated_database(get_settings()) as database:
            yield database
    except DatabaseUnavailableError as exc:
        Console(stderr=True).print(f"error: {exc.diagnostics}", markup=False,
                                   highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


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


def trusted_keys(extra: list[Path]) -> dict[str, Ed25519PublicKey]:
    """The public keys the trail may be signed with: HUB_AUDIT_KEY_FILE's (if it exists), the
    earlier keys of HUB_AUDIT_TRUSTED_KEYS, and `extra` PEM files. Raises AuditKeyError."""
    keys: dict[str, Ed25519PublicKey] = {}
    settings = get_settings()
    own = Path(settings.audit_key_file)
    if own.exists():
        public = load_key(own).public_key()
        keys[key_id(public)] = public
    keys.update(public_keys_from(settings.audit_trusted_keys))
    for path in extra:
        public = load_public_key(path.read_bytes())
        keys[key_id(public)] = public
    return keys


def _fail(text: str) -> typer.Exit:
    typer.echo(f"error: {text}", err=True)
    return typer.Exit(1)


def _read_checkpoint(path: Path) -> Checkpoint:
    try:
        return Checkpoint.loads(path.read_text(encoding="utf-8"))
    except (OSError, CheckpointError) as exc:
        raise _fail(f"{path}: {exc}") from None


@audit_app.command("verify")
def verify_command(
    public_key: list[Path] = typer.Option(
        [], "--public-key", exists=True, dir_okay=False,
        help="PEM public key of another (e.g. an earlier) signing key; repeatable",
    ),
    witness: list[Path] = typer.Option(
        [], "--witness", exists=True, dir_okay=False,
        help="A checkpoint exported earlier (`hub audit checkpoint export`) that the trail "
             "must still contain; repeatable",
    ),
    jobs: int = typer.Option(
        min(2, os.cpu_count() or 1), "--jobs", min=1,
        help="Worker processes that check chunks of the tree side by side (a large trail)",
    ),
    signatures: bool = typer.Option(
        False, "--signatures",
        help="Also check every sealed record's writer's signature (Ed25519), as the "
             "disclosure log does; several times slower",
    ),
) -> None:
    """Check every record, the tree and the checkpoints' signatures; exit 1 naming the first
    broken record."""
    try:
        keys = trusted_keys(public_key)
    except AuditKeyError as exc:
        raise _fail(str(exc)) from None
    witnessed = [_read_checkpoint(p) for p in witness]
    with _database() as database:
        with _Bar() as bar:
            result = verify(lambda: database.session(write=False), keys, witnessed=witnessed,
                            progress=bar, jobs=jobs, signatures=signatures,
                            url=database.engine.url.render_as_string(hide_password=False))
        reads = ReadAudit(database)  # only looks: it appends nothing
        try:
            spooled = reads.check(keys)
        finally:
            reads.close()
        spool_broken = result.ok and spooled.problem is not None
        if spool_broken:  # the auditors' pages say so too
            result = replace(result, ok=False,
                             reason=f"broken in the read spool: {spooled.problem}")
        with database.session(write=True) as session:  # shown on the auditors' pages
            verifications.record(session, result, at=utcnow())
    if spool_broken:
        typer.echo(result.reason)
        raise typer.Exit(1)
    if result.ok:
        typer.echo(f"{result.count} records intact")
        detail = (f"{result.sealed} sealed under checkpoint {result.tree_size}, "
                  f"{result.unsealed} waiting for the sealer")
        if spooled.waiting:
            detail += (f"; {spooled.waiting} records of reads in the spool, their hashes and "
                       "signatures good, waiting to be moved into the trail")
        typer.echo(detail, err=True)
        return
    if result.first_broken_seq is not None:
        where = f" at record {result.first_broken_seq}"
    elif result.position is not None:
        where = f" at leaf {result.position}"
    else:
        where = ""
    typer.echo(f"broken{where}: {result.reason}")
    raise typer.Exit(1)


@audit_app.command("prove")
def prove_command(
    record: int = typer.Argument(..., help="The record's id (audit_records.seq)"),
    public_key: list[Path] = typer.Option(
        [], "--public-key", exists=True, dir_okay=False,
        help="PEM public key of another (e.g. an earlier) signing key; repeatable",
    ),
) -> None:
    """Print (JSON) the inclusion proof of a record against the latest checkpoint; exit 1
    when the record is not what its leaf hash says (its body, its writer's signature or its
    search columns changed): a proof of the leaf would not be a proof of what it now says."""
    try:
        keys = trusted_keys(public_key)
    except AuditKeyError as exc:
        raise _fail(str(exc)) from None
    with _database() as database, database.session(write=False) as s:
        try:
            proof = inclusion_proof(s, record)
        except TreeError as exc:
            raise _fail(str(exc)) from None
        row = s.get(AuditRecordRow, record)
        problem = check_record(row, keys) if row is not None else f"there is no record {record}"
        if problem is None and row is not None:
            problem = copies.problem_of(s.connection(), row.seq, row.leaf_index,
                                        event_id_of(bytes(row.body)))
    if problem is not None:
        raise _fail(f"{problem}: its leaf is in the tree, but not what the record says now, "
                    "so no proof is given (run `hub audit verify`)")
    typer.echo(json.dumps(proof.to_json(), indent=2))


checkpoint_app = typer.Typer(help="Signed checkpoints of the audit tree.", no_args_is_help=True)
audit_app.add_typer(checkpoint_app, name="checkpoint")


@checkpoint_app.command("export")
def checkpoint_export(
    size: int = typer.Option(None, "--size", help="The checkpoint of this tree size "
                                                   "(default: the latest)"),
) -> None:
    """Print a signed checkpoint as JSON, for an outside witness to keep."""
    with _database() as database, database.session(write=False) as s:
        cp = latest_checkpoint(s) if size is None else checkpoint_at(s, size)
    if cp is None:
        raise _fail("no such checkpoint" if size is not None
                    else "no checkpoint yet: the sealer has not sealed anything")
    typer.echo(json.dumps(cp.to_json()))


@audit_app.command("consistency")
def consistency_command(
    old: str = typer.Argument(..., help="Tree size of the older checkpoint, or a file of one "
                                        "exported earlier"),
    new: str = typer.Argument(None, help="Tree size of the newer checkpoint, or a file "
                                         "(default: the latest)"),
) -> None:
    """Prove that the tree of OLD is a prefix of the tree of NEW (RFC 9162 consistency):
    print the proof as JSON after checking it and both checkpoints' signatures."""
    try:
        keys = trusted_keys([])
    except AuditKeyError as exc:
        raise _fail(str(exc)) from None
    with _database() as database, database.session(write=False) as s:
        def find(given: str | None) -> Checkpoint:
            if given is None:
                cp = latest_checkpoint(s)
            elif given.isdigit():
                cp = checkpoint_at(s, int(given))
            else:
                cp = _read_checkpoint(Path(given))
            if cp is None:
                raise _fail(f"no checkpoint {given or '(none yet)'}")
            problem = cp.problem(keys)
            if problem is not None:
                raise _fail(problem)
            return cp

        first, second = find(old), find(new)
        try:
            proof = consistency_proof(s, first, second)
        except TreeError as exc:
            raise _fail(str(exc)) from None
    typer.echo(json.dumps({"old": first.to_json(), "new": second.to_json(),
                           "consistency_path": [p.hex() for p in proof]}, indent=2))


@audit_app.command("seal")
def seal_command(
    once: bool = typer.Option(False, "--once", help="Seal what is waiting and exit"),
    interval: float = typer.Option(None, help="Seconds between seals "
                                              "(default HUB_SEAL_INTERVAL)"),
) -> None:
    """Run the sealer on its own: seal committed records into the tree and sign checkpoints
    (any number of sealers may run; each record is sealed once)."""
    import signal
    import threading

    settings = get_settings()
    try:
        signer = Signer.from_file(settings.audit_key_file)
        keys = trusted_keys([])
    except AuditKeyError as exc:
        raise _fail(str(exc)) from None
    with _database() as database:
        reads = ReadAudit(database, settings)  # the reads' records are moved in, then sealed
        if once:
            try:
                report = seal_all(database, signer, keys=keys, reads=reads)
                if report.blocked is not None:
                    reads.move_all()  # the rest goes in unsealed, for verify to see
            except SealError as exc:
                raise _fail(str(exc)) from None
            finally:
                reads.close()
            typer.echo(f"sealed {report.sealed} records; tree size {report.tree_size}")
            if report.blocked is not None:
                raise _fail(f"stopped before a record that may not be sealed: {report.blocked}")
            return
        sealer = Sealer(database, signer, keys=keys, reads=reads,
                        interval=interval if interval is not None else settings.seal_interval)
        done = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        sealer.start()
        typer.echo(f"sealing the audit trail every {sealer.interval:g} s; Ctrl-C stops",
                   err=True)
        try:
            done.wait()
        except KeyboardInterrupt:
            pass
        finally:
            sealer.stop()
            reads.close()
        typer.echo(f"sealer: sealed {sealer.sealed} records in {sealer.passes} passes")


@audit_app.command("public-key")
def public_key_command() -> None:
    """Print the public key (PEM) of HUB_AUDIT_KEY_FILE, for verifying the trail elsewhere."""
    try:
        private = load_key(get_settings().audit_key_file)
    except AuditKeyError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(public_key_pem(private.public_key()).decode("ascii"), nl=False)
