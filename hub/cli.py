"""The `hub` command: serve, demo, migrations and the admin CLI (CONTRACT section 1).

Admin commands act on the database in HUB_DATABASE_URL as the hub itself; the last line an
`add` prints is the new id. Errors print a plain sentence to stderr and exit 1. Each command
that changes who may do what (org, client and user add / disable / enable) leaves an
AuditEvent naming the operator (the OS user) in its own transaction; a refused one leaves a
failure record.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

import adapters.registry  # noqa: F401  (the channels: the dispatcher's push)
import hub.wiring  # noqa: F401  (every rule registered before any work)
from hub.audit.cli import audit_app
from hub.auth.subject import Subject
from hub.config import Settings, configure_logging, get_settings, logging_config
from hub.delivery.cli import deliveries_app
from hub.demo.cli import demo_app
from hub.errors import DatabaseUnavailableError, HubError
from hub.fhir.urls import shown_url

app = typer.Typer(help="CareHub: FHIR message hub.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
org_app = typer.Typer(help="Organisations (Organization resources).", no_args_is_help=True)
client_app = typer.Typer(help="System clients (SMART Backend Services).", no_args_is_help=True)
user_app = typer.Typer(help="People who sign in to /ui.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(org_app, name="org")
app.add_typer(client_app, name="client")
app.add_typer(user_app, name="user")
app.add_typer(audit_app, name="audit")
app.add_typer(deliveries_app, name="deliveries")
app.add_typer(demo_app, name="demo")

T = TypeVar("T")
HUB = Subject.hub_itself()
out = Console(width=None if sys.stdout.isatty() else 200)


@contextmanager
def _session(*, write: bool) -> Iterator[Session]:
    from hub.db.migrate import migrated_database

    with migrated_database(get_settings()) as database, database.session(write=write) as s:
        yield s


def _audit_admin(session: Session, text: str, target: str | None, *,
                 failed: bool = False) -> None:
    from hub.audit.admin import record_admin
    from hub.audit.recorder import Auditor
    from hub.audit.signing import Signer

    record_admin(session, Auditor(Signer.from_file(get_settings().audit_key_file)), text,
                 target, failed=failed)


def _run(fn: Callable[[Session], T], *, write: bool = True, audit_text: str | None = None,
         audit_target: str | Callable[[T], str] | None = None) -> T:
    """Run `fn` in one transaction; a HubError becomes a message and exit code 1.

    With `audit_text`, an admin AuditEvent (the operator, the text, `audit_target` or the
    target made from the result) is recorded in the same transaction; when `fn` fails, a
    failure record is written in a transaction of its own."""
    try:
        with _session(write=write or audit_text is not None) as session:
            result = fn(session)
            if audit_text is not None:
                target = audit_target(result) if callable(audit_target) else audit_target
                _audit_admin(session, audit_text, target)
            return result
    except HubError as exc:
        if audit_text is not None and not isinstance(exc, DatabaseUnavailableError):
            target = audit_target if isinstance(audit_target, str) else None
            with _session(write=True) as session:
                _audit_admin(session, f"{audit_text} (refused: {exc.diagnostics})", target,
                             failed=True)
        typer.echo(f"error: {exc.diagnostics}", err=True)
        raise typer.Exit(1) from None


def _args(**values: Any) -> str:
    """The options of a command, for its audit record (None left out)."""
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in values.items() if v is not None)


ROLES = ("api", "dispatcher", "scheduler", "sealer")
_ROLE_SETTINGS = {"dispatcher": "HUB_DISPATCHER", "scheduler": "HUB_SCHEDULER",
                  "sealer": "HUB_SEALER"}


def _roles(given: str | None) -> set[str]:
    """The roles named by --roles (default: all of them)."""
    if given is None:
        return set(ROLES)
    roles = {r.strip() for r in given.split(",") if r.strip()}
    unknown = roles - set(ROLES)
    if unknown or not roles:
        typer.echo(f"error: --roles takes a comma-separated list of {', '.join(ROLES)}; "
                   f"not {', '.join(sorted(unknown)) or 'nothing'}", err=True)
        raise typer.Exit(1)
    return roles


LOOP: Final = "uvloop"
HTTP: Final = "httptools"
"""uvicorn's event loop and HTTP parser for `hub serve`, named so that what runs is what was
measured (uvicorn's "auto" would fall back to asyncio and h11 silently): against those,
bench/ingest.py took 7 % less hub CPU a message (README, Benchmarks)."""


@app.command()
def serve(
    host: str = typer.Option(None, help="Listen address (default HUB_HOST)"),
    port: int = typer.Option(None, help="Listen port (default HUB_PORT)"),
    workers: int = typer.Option(None, help="Worker processes (default HUB_WORKERS)"),
    roles: str = typer.Option(
        None, help="Roles this process runs, comma-separated, of api, dispatcher, scheduler, "
                   "sealer (default: all; the background roles also need their HUB_* switch "
                   "on). Without api no port is taken."),
) -> None:
    """Run the hub (migrations run on start)."""
    chosen = _roles(roles)
    if roles is not None:  # the roles decide; HUB_DISPATCHER etc. are set to match
        for role, var in _ROLE_SETTINGS.items():
            os.environ[var] = "true" if role in chosen else "false"
        get_settings.cache_clear()
    if "api" not in chosen:
        _run_background(chosen - {"api"})
        return
    import uvicorn

    from hub.app import create_app

    settings = get_settings()
    host, port = host or settings.host, port or settings.port
    workers = workers or settings.workers
    if "HUB_BASE_URL" not in os.environ:  # links should name the address actually served
        os.environ["HUB_BASE_URL"] = f"http://{host}:{port}"
        get_settings.cache_clear()
        settings = get_settings()
    if workers > 1:
        _run(lambda _s: None, write=False)  # migrate once here, not in racing workers
        os.environ["HUB_WORKERS"] = str(workers)  # the workers share the MLLP port
        uvicorn.run("hub.app:create_app", factory=True, host=host, port=port,
                    workers=workers, log_level="info", log_config=_uvicorn_logs(settings),
                    loop=LOOP, http=HTTP)
        return
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info",
                log_config=_uvicorn_logs(settings), loop=LOOP, http=HTTP)


def _uvicorn_logs(settings: Settings) -> dict[str, Any]:
    """uvicorn's own logging configuration with the hub's root logger added (uvicorn applies
    it in every worker process)."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    merged = copy.deepcopy(LOGGING_CONFIG)
    ours = logging_config(settings)
    merged["formatters"].update(ours["formatters"])
    merged["handlers"].update(ours["handlers"])
    merged["root"] = ours["root"]
    return merged


def _run_background(roles: set[str]) -> None:
    """Run the dispatcher, scheduler and/or sealer without the API until SIGTERM or Ctrl-C;
    print what the sealer sealed when it stops."""
    import signal
    import threading

    from hub.audit.recorder import Auditor
    from hub.audit.seal import Sealer
    from hub.audit.signing import Signer, public_keys_from
    from hub.audit.spool import ReadAudit
    from hub.db.migrate import migrated_database
    from hub.delivery.dispatcher import Dispatcher
    from hub.scheduler.runner import Scheduler

    settings = get_settings()
    configure_logging(settings)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with migrated_database(settings) as database:
        signer = Signer.from_file(settings.audit_key_file)
        auditor = Auditor(signer, base_url=settings.fhir_base)
        stoppers: list[Callable[[], object]] = []
        sealer: Sealer | None = None
        if "dispatcher" in roles:
            stoppers.append(Dispatcher(database, settings, auditor=auditor).start().stop)
        if "scheduler" in roles:
            stoppers.append(Scheduler(database, settings, auditor=auditor).start().stop)
        if "sealer" in roles:
            reads = ReadAudit(database, settings)  # it moves the reads' records too
            sealer = Sealer(database, signer, interval=settings.seal_interval,
                            keys=public_keys_from(settings.audit_trusted_keys),
                            reads=reads).start()
            stoppers.extend([reads.close, sealer.stop])
        typer.echo(f"running {', '.join(sorted(roles))}; SIGTERM or Ctrl-C stops", err=True)
        try:
            done.wait()
        except KeyboardInterrupt:
            pass
        finally:
            for stop in reversed(stoppers):
                stop()
        if sealer is not None:
            typer.echo(f"sealer: sealed {sealer.sealed} records in {sealer.passes} passes")


@app.command()
def scheduler(
    once: bool = typer.Option(False, "--once", help="Sweep once and exit"),
    interval: float = typer.Option(None, help="Seconds between sweeps "
                                              "(default HUB_SCHEDULER_INTERVAL)"),
) -> None:
    """Run the timed checks on their own (for hubs served with HUB_SCHEDULER=false)."""
    import signal
    import threading

    from hub.audit.recorder import Auditor
    from hub.audit.signing import Signer
    from hub.db.migrate import migrated_database
    from hub.scheduler.runner import Scheduler

    settings = get_settings()
    if interval is not None:
        settings = settings.model_copy(update={"scheduler_interval": interval})
    configure_logging(settings)
    with migrated_database(settings) as database:
        auditor = Auditor(Signer.from_file(settings.audit_key_file), base_url=settings.fhir_base)
        runner = Scheduler(database, settings, auditor=auditor)
        if once:
            report = runner.run_once()
            if report is None:
                raise typer.Exit(1)
            typer.echo(f"acted on {report.acted} due checks {report.outcomes}, "
                       f"{report.failed} failed")
            return
        done = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        runner.start()
        typer.echo(f"sweeping timed checks every {settings.scheduler_interval:g} s; "
                   "Ctrl-C stops")
        try:
            done.wait()
        except KeyboardInterrupt:
            pass
        finally:
            runner.stop()


@app.command()
def mllp(
    host: str = typer.Option(None, help="Listen address (default HUB_MLLP_HOST)"),
    port: int = typer.Option(None, help="Listen port (default HUB_MLLP_PORT, else 2575)"),
) -> None:
    """Take HL7 v2 ADT over MLLP on its own (CONTRACT section 10); Ctrl-C stops."""
    import asyncio
    import signal

    from adapters.registry import mllp_channel
    from hub.audit.recorder import Auditor
    from hub.audit.signing import Signer
    from hub.db.migrate import migrated_database

    settings = get_settings()
    configure_logging(settings)
    chosen = port if port is not None else (settings.mllp_port or 2575)

    async def run() -> None:
        with migrated_database(settings) as database:
            auditor = Auditor(Signer.from_file(settings.audit_key_file),
                              base_url=settings.fhir_base)
            channel = mllp_channel(database, settings, auditor, host=host, port=chosen)
            try:
                await channel.start()
            except OSError as exc:
                typer.echo(f"error: cannot listen on {host or settings.mllp_host}:{chosen}: "
                           f"{exc.strerror or exc}", err=True)
                raise typer.Exit(1) from None
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            typer.echo(f"taking HL7 v2 over MLLP on {host or settings.mllp_host}:"
                       f"{getattr(channel, 'port', chosen)}; Ctrl-C stops", err=True)
            await stop.wait()
            await channel.stop()

    asyncio.run(run())


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the database in HUB_DATABASE_URL to the newest schema."""
    _run(lambda _s: None, write=False)
    typer.echo("schema up to date")


# --- organisations ---------------------------------------------------------------------

@org_app.command("add")
def org_add(
    name: str = typer.Option(..., help="Name, e.g. 'Time kommune'"),
    kind: str = typer.Option(..., help="mental-health-centre | municipality | other"),
    identifier: list[str] = typer.Option(
        ..., help="SYSTEM|VALUE, e.g. an organisasjonsnummer; repeat for more (a "
                  "municipality's kommunenummer, a HER-id)"),
    endpoint: str = typer.Option(None, help="URL the hub pushes messages to"),
    org_id: str = typer.Option(None, "--id", help="Id to use (default: generated)"),
) -> None:
    """Register an organisation; prints its id last."""
    from hub.orgs.service import add_organization

    text = "org add " + _args(id=org_id, name=name, kind=kind,
                              identifier=" --identifier ".join(identifier),
                              endpoint=shown_url(endpoint) if endpoint else None)
    new_id = _run(lambda s: add_organization(s, HUB, name=name, kind=kind,
                                             identifier=identifier[0], endpoint=endpoint,
                                             org_id=org_id, more_identifiers=identifier[1:]),
                  audit_text=text, audit_target=lambda new: f"Organization/{new}")
    typer.echo(new_id)


@org_app.command("endpoint")
def org_endpoint(
    org_id: str = typer.Argument(..., help="Organisation id"),
    url: str = typer.Argument(..., help="URL the hub pushes messages to; user:password@ in it "
                                        "(HTTP Basic) is kept apart from the directory"),
) -> None:
    """Set (or change) where the hub pushes an organisation's messages."""
    from hub.orgs.service import set_endpoint

    endpoint_id = _run(lambda s: set_endpoint(s, HUB, org_id, url),
                       audit_text=f"org endpoint {org_id} {shown_url(url)}",
                       audit_target=f"Organization/{org_id}")
    typer.echo(f"Endpoint/{endpoint_id} -> {shown_url(url)}")


@org_app.command("list")
def org_list() -> None:
    """List organisations."""
    from hub.orgs.service import list_organizations

    orgs = _run(lambda s: list_organizations(s, HUB), write=False)
    table = Table("id", "name", "kind", "identifier", "active")
    for o in orgs:
        body = o.body or {}
        ident: dict[str, str] = next(iter(body.get("identifier", [])), {})
        kind = next((c.get("code", "") for t in body.get("type", []) for c in t.get("coding", [])),
                    "")
        table.add_row(o.id, body.get("name", ""), kind,
                      f"{ident.get('system', '')}|{ident.get('value', '')}",
                      "yes" if body.get("active", True) else "no")
    out.print(table)


@org_app.command("disable")
def org_disable(org_id: str = typer.Argument(..., help="Organisation id")) -> None:
    """Disable an organisation and every client acting for it."""
    from hub.auth.clients import list_clients, set_client_active
    from hub.orgs.service import set_organization_active

    def work(s: Session) -> int:
        set_organization_active(s, HUB, org_id, False)
        clients = [c.id for c in list_clients(s) if c.organization_id == org_id and c.active]
        for client_id in clients:
            set_client_active(s, client_id, False)
        return len(clients)

    n = _run(work, audit_text=f"org disable {org_id} (and its clients)",
             audit_target=f"Organization/{org_id}")
    typer.echo(f"disabled Organization/{org_id} and {n} client(s)")


@org_app.command("enable")
def org_enable(org_id: str = typer.Argument(..., help="Organisation id")) -> None:
    """Enable an organisation again (its clients stay disabled until enabled one by one)."""
    from hub.orgs.service import set_organization_active

    _run(lambda s: set_organization_active(s, HUB, org_id, True),
         audit_text=f"org enable {org_id}", audit_target=f"Organization/{org_id}")
    typer.echo(f"enabled Organization/{org_id}")


# --- clients ---------------------------------------------------------------------------

@client_app.command("add")
def client_add(
    org: str = typer.Option(..., "--org", help="Organisation id the client acts for"),
    jwks: Path = typer.Option(..., exists=True, dir_okay=False, help="JWKS file (public keys)"),
    name: str = typer.Option(None, help="A name for people (default: the file name)"),
    client_id: str = typer.Option(None, "--id", help="client_id to use (default: generated)"),
) -> None:
    """Register a system client with its public keys; prints its client_id last."""
    from hub.auth.clients import register_client

    text = jwks.read_text(encoding="utf-8")
    new_id = _run(lambda s: register_client(s, organization_id=org, jwks_json=text,
                                            name=name or jwks.stem, client_id=client_id),
                  audit_text=f"client add {_args(org=org, id=client_id, name=name or jwks.stem)}",
                  audit_target=lambda new: f"Client/{new}")
    typer.echo(new_id)


@client_app.command("keygen")
def client_keygen(
    key: Path = typer.Option(..., "--key", help="Where to write the private key (PEM, 0600)"),
    jwks: Path = typer.Option(..., "--jwks", help="Where to write the public JWKS"),
    kid: str = typer.Option(None, help="Key id (default: a thumbprint)"),
) -> None:
    """Make an ES384 key pair for a client system: keep the key, register the JWKS."""
    import json

    from joserfc.jwk import ECKey

    def refuse(sentence: str) -> NoReturn:
        typer.echo(f"error: {sentence}", err=True)
        raise typer.Exit(1)

    for path, what in ((key, "the key"), (jwks, "the JWKS")):
        if path.exists():
            refuse(f"{path} exists; choose another path for {what} or move it away.")
        if not path.parent.is_dir():
            refuse(f"{path.parent} is not a directory; {what} cannot be written there.")
    private = ECKey.generate_key("P-384", private=True)
    kid = kid or private.thumbprint()
    public = private.as_dict(private=False, kid=kid, use="sig", alg="ES384")
    try:
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        refuse(f"cannot write the key to {key}: {exc.strerror}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(private.as_pem(private=True))
        jwks.write_text(json.dumps({"keys": [public]}, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:  # nothing left behind: the retry must not find a key of no use
        key.unlink(missing_ok=True)
        refuse(f"cannot write {exc.filename or jwks}: {exc.strerror}; nothing was kept.")
    typer.echo(f"private key {key} (keep it on the client system), public JWKS {jwks}, "
               f"kid {kid}")


@client_app.command("list")
def client_list() -> None:
    """List clients."""
    from hub.auth.clients import list_clients

    rows = _run(lambda s: [(c.id, c.organization_id, c.name, c.active) for c in list_clients(s)],
                write=False)
    table = Table("client_id", "organisation", "name", "active")
    for cid, org, name, active in rows:
        table.add_row(cid, org, name, "yes" if active else "no")
    out.print(table)


@client_app.command("disable")
def client_disable(client_id: str = typer.Argument(..., help="client_id")) -> None:
    """Disable a client; its tokens stop working at once."""
    from hub.auth.clients import set_client_active

    _run(lambda s: set_client_active(s, client_id, False),
         audit_text=f"client disable {client_id}", audit_target=f"Client/{client_id}")
    typer.echo(f"disabled client {client_id}")


@client_app.command("enable")
def client_enable(client_id: str = typer.Argument(..., help="client_id")) -> None:
    """Enable a client again."""
    from hub.auth.clients import set_client_active

    _run(lambda s: set_client_active(s, client_id, True),
         audit_text=f"client enable {client_id}", audit_target=f"Client/{client_id}")
    typer.echo(f"enabled client {client_id}")


# --- people ----------------------------------------------------------------------------

def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Again: "):
            typer.echo("error: the passwords differ", err=True)
            raise typer.Exit(1)
        return first
    return sys.stdin.readline().rstrip("\r\n")


@user_app.command("add")
def user_add(
    username: str = typer.Option(..., help="Sign-in name"),
    role: str = typer.Option(..., help="coordinator | auditor | admin"),
    org: str = typer.Option(None, "--org", help="Organisation id (coordinators need one)"),
    email: str = typer.Option(None, "--email", help="Address for the hub's e-mail notices "
                                                    "(counts and a link, no health data)"),
) -> None:
    """Add a person; the password is read from stdin. Prints the new user id last."""
    from hub.auth.users import add_user

    password = _read_password()
    text = f"user add {_args(username=username, role=role, org=org, email=email)}"
    new_id = _run(lambda s: add_user(s, username=username, password=password, role=role,
                                     organization_id=org, email=email),
                  audit_text=text,
                  audit_target=f"User/{username}")
    typer.echo(str(new_id))


@user_app.command("list")
def user_list() -> None:
    """List people."""
    from hub.auth.users import list_users

    rows = _run(lambda s: [(u.id, u.username, u.role, u.organization_id, u.active)
                           for u in list_users(s)], write=False)
    table = Table("id", "username", "role", "organisation", "active")
    for uid, username, role, org, active in rows:
        table.add_row(str(uid), username, role, org or "", "yes" if active else "no")
    out.print(table)


@user_app.command("disable")
def user_disable(username: str = typer.Argument(..., help="Sign-in name")) -> None:
    """Disable a person; their sessions end at once."""
    from hub.auth.users import set_user_active

    _run(lambda s: set_user_active(s, username, False),
         audit_text=f"user disable {username}", audit_target=f"User/{username}")
    typer.echo(f"disabled user {username}")


@user_app.command("enable")
def user_enable(username: str = typer.Argument(..., help="Sign-in name")) -> None:
    """Enable a person again."""
    from hub.auth.users import set_user_active

    _run(lambda s: set_user_active(s, username, True),
         audit_text=f"user enable {username}", audit_target=f"User/{username}")
    typer.echo(f"enabled user {username}")


def main() -> None:
    """The `hub` command: the commands above, with a database that cannot be reached or
    opened told in one line and exit code 1, whichever command met it (those of `_run` say so
    themselves; `hub audit` and `hub deliveries` open the database on their own)."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    from hub.db.migrate import driver_says

    try:
        app()
    except DatabaseUnavailableError as exc:
        typer.echo(f"error: {exc.diagnostics}", err=True)
        sys.exit(1)
    except (OperationalError, InterfaceError) as exc:  # lost on the way, after opening
        typer.echo(f"error: the database failed: {driver_says(exc)}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
