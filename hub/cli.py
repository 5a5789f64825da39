"""The `hub` command."""

from __future__ import annotations

import os

import typer

from hub.config import get_settings

app = typer.Typer(help="CareHub: FHIR message hub.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@app.command()
def serve(
    host: str = typer.Option(None, help="Listen address (default HUB_HOST)"),
    port: int = typer.Option(None, help="Listen port (default HUB_PORT)"),
) -> None:
    """Run the hub (migrations run on start)."""
    import uvicorn

    from hub.app import create_app

    settings = get_settings()
    host, port = host or settings.host, port or settings.port
    if "HUB_BASE_URL" not in os.environ:  # links should name the address actually served
        settings = settings.model_copy(update={"base_url": f"http://{host}:{port}"})
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


@app.command()
def demo(
    host: str = typer.Option(None, help="Listen address (default HUB_HOST)"),
    port: int = typer.Option(None, help="Listen port (default HUB_PORT)"),
) -> None:
    """Seed demo organisations and patients (idempotent), then serve."""
    from hub.db.engine import Database
    from hub.db.migrate import upgrade
    from hub.demo import seed

    settings = get_settings()
    database = Database.connect(settings)
    try:
        upgrade(database.engine)
        with database.session(write=True) as session:
            made = seed(session)
    finally:
        database.dispose()
    base = f"http://{host or settings.host}:{port or settings.port}/fhir"
    typer.echo(f"seeded {len(made)} resources in {settings.database_url}")
    typer.echo(f"try: curl {base}/Patient   |   {base}/metadata")
    serve(host=host, port=port)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the database in HUB_DATABASE_URL to the newest schema."""
    from hub.db.engine import Database
    from hub.db.migrate import upgrade

    settings = get_settings()
    database = Database.connect(settings)
    try:
        upgrade(database.engine)
    finally:
        database.dispose()
    typer.echo(f"schema up to date ({database.dialect})")


if __name__ == "__main__":
    app()
