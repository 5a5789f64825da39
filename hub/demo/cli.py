"""`hub demo`: seed the demo and tell its story, then serve it; `hub demo token ORG` prints an
access token of an organisation's demo system (for curl and friends)."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

import httpx
import typer
from rich.console import Console
from rich.table import Table

from hub.config import Settings, get_settings
from hub.demo import demo_directory, first_sweep, tell_story
from hub.demo.drive import DemoError
from hub.demo.keys import read_clients, token_form, write_clients
from hub.demo.scenario import PEOPLE
from hub.demo.seed import ORGANIZATIONS, Seeded, seed

demo_app = typer.Typer(help="A realistic demo: seed, tell the story, serve.")
out = Console(width=200, soft_wrap=True, highlight=False)


def _settings(host: str | None, port: int | None) -> Settings:
    """The settings, with HUB_BASE_URL naming the address served (as `hub serve` does)."""
    settings = get_settings()
    if "HUB_BASE_URL" not in os.environ:
        os.environ["HUB_BASE_URL"] = f"http://{host or settings.host}:{port or settings.port}"
        get_settings.cache_clear()
        settings = get_settings()
    return settings


def _this_command() -> str:
    """How the user ran `hub` (e.g. `.venv/bin/hub` when the venv is not active), so the
    commands printed work as printed."""
    ran = sys.argv[0] if sys.argv and Path(sys.argv[0]).name == "hub" else "hub"
    if ran != "hub" and shutil.which("hub") == str(Path(ran).resolve()):
        ran = "hub"
    return shlex.quote(ran)


def _report(settings: Settings, seeded: Seeded, directory: Path, told_sent: int,
            queued: int, withheld: int) -> None:
    base = settings.base_url.rstrip("/")
    names = {o.id: o.name for o in ORGANIZATIONS}
    out.print(f"\nCareHub demo in {settings.database_url} (story dated from "
              f"{seeded.anchor:%Y-%m-%d %H:%M} UTC)")
    out.print(f"The story: {told_sent} messages accepted; {queued} deliveries queued, "
              f"{withheld} withheld as consent says.")
    out.print("Patients (synthetic fødselsnumre): "
              + ", ".join(f"{p.name} {p.fnr}" for p in PEOPLE))
    people = Table("username", "role", "organisation", "password",
                   title=f"People: sign in at {base}/ui")
    for u in seeded.users:
        people.add_row(u.username, u.role, names.get(u.organization_id or "", ""), u.password)
    out.print(people)
    systems = Table("organisation", "client_id", "kid", "private key",
                    title="Systems (SMART Backend Services, ES384)")
    for org_id, c in seeded.clients.items():
        systems.add_row(names[org_id], c.client_id, c.kid, c.key_file)
    out.print(systems)
    out.print(f"Passwords and private keys stay in {directory} (mode 0600; keep it private).\n"
              f"A token for Time kommune's system: TOKEN=$({_this_command()} demo token "
              f"time-kommune)\n"
              f"  then: curl -H \"Authorization: Bearer $TOKEN\" "
              f"'{base}/fhir/Task?code=follow-up-check'\n"
              f"Or sign a client assertion (iss = sub = client_id, aud = {base}/auth/token, "
              f"kid in the header) with the private key and POST it to {base}/auth/token.\n"
              f"What the hub pushed to each system: {base}/demo/inbox/time-kommune (and "
              f"jaeren-dps, klepp-kommune). Start afresh: delete the database and {directory}.")


@demo_app.callback(invoke_without_command=True)
def demo(
    ctx: typer.Context,
    host: str = typer.Option(None, help="Listen address (default HUB_HOST)"),
    port: int = typer.Option(None, help="Listen port (default HUB_PORT)"),
    serve: bool = typer.Option(True, "--serve/--no-serve",
                               help="Serve after seeding (--no-serve: stop, for tests and CI)"),
) -> None:
    """Seed a centre, two municipalities, their systems and keys, people and patients, tell
    the story through the API (idempotent: a second run changes nothing), then serve."""
    if ctx.invoked_subcommand is not None:
        return
    from hub.cli import _run

    settings = _settings(host, port)
    directory = demo_directory(settings)
    seeded = _run(lambda s: seed(s, directory, base_url=settings.base_url),
                  audit_text=f"demo seed (keys and passwords in {directory})",
                  audit_target="Organization/jaeren-dps")
    write_clients(directory, list(seeded.clients.values()), f"{settings.base_url}/auth/token")
    try:
        told = tell_story(settings, seeded)
    except DemoError as exc:
        typer.echo(f"error: the demo story failed: {exc}", err=True)
        raise typer.Exit(1) from None
    _report(settings, seeded, directory, told.sent, told.queued, told.withheld)
    from hub.demo.pas import send_stay

    stay = send_stay(settings, seeded.anchor)
    typer.echo(f"Jæren DPS's PAS sent a stay of {stay.fnr} over HL7 v2 MLLP (visit "
               f"{stay.visit}): " + ", ".join(f"ADT^{t} {c}" for t, c in stay.acks.items())
               + " (AA: accepted).")
    if any(code != "AA" for code in stay.acks.values()):
        typer.echo("error: the hub did not accept the PAS's stay", err=True)
        raise typer.Exit(1)
    swept = first_sweep(settings)
    typer.echo(f"Timed checks swept once: {swept.acted} acted on "
               f"({', '.join(f'{n} {k}' for k, n in sorted(swept.outcomes.items())) or 'none'}).")
    if serve:
        _serve(settings, host or settings.host, port or settings.port)


def _serve(settings: Settings, host: str, port: int) -> None:
    """Serve the hub with the stand-in receiving systems beside it (one process)."""
    import uvicorn

    from hub.app import create_app
    from hub.demo.receiver import router

    app = create_app(settings)
    app.include_router(router)
    uvicorn.run(app, host=host, port=port, log_level="info")


@demo_app.command("token")
def token(
    org: str = typer.Argument(..., help="jaeren-dps, time-kommune or klepp-kommune"),
    scope: str = typer.Option("system/*.*", help="Scopes to ask for"),
) -> None:
    """Print an access token of ORG's demo system (the demo must be running)."""
    directory = demo_directory(get_settings())
    try:
        url, clients = read_clients(directory)
    except FileNotFoundError:
        typer.echo(f"error: no demo in {directory}; run `hub demo` first.", err=True)
        raise typer.Exit(1) from None
    if org not in clients:
        typer.echo(f"error: no demo system for '{org}'; one of {', '.join(clients)}.", err=True)
        raise typer.Exit(1)
    try:
        r = httpx.post(url, data=token_form(clients[org], url, scope), timeout=10)
    except httpx.HTTPError as exc:
        typer.echo(f"error: the hub at {url} did not answer ({exc}); is `hub demo` running?",
                   err=True)
        raise typer.Exit(1) from None
    if r.status_code != 200:
        typer.echo(f"error: no token ({r.status_code}): {r.text}", err=True)
        raise typer.Exit(1)
    typer.echo(r.json()["access_token"])
