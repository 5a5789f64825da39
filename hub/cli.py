"""The `hub` command."""

from __future__ import annotations

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
    uvicorn.run(create_app(settings), host=host or settings.host, port=port or settings.port,
                log_level="info")


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
