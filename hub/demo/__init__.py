"""`hub demo`: a realistic, current-looking CareHub to show and to try (CONTRACT section 1).

- seed: Jæren DPS, Time kommune (1121) and Klepp kommune (1120) with messaging Endpoints,
  one client per organisation with an ES384 key kept in the demo directory, and the people
  (a coordinator per organisation, an auditor, an admin) with generated passwords.
- scenario / messages: the story (see hub.demo.scenario), as message Bundles.
- drive: tells the story through the public API (tokens, then $process-message), checking
  every answer.
- receiver: stand-ins for the organisations' systems that the hub pushes to when served.

Running it twice changes nothing: what is registered is kept, and the story is anchored at
the first run, so its messages are the same and the hub answers them as repeats.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from sqlalchemy.engine import make_url

import hub.wiring  # noqa: F401  (every rule registered before any work)
from hub.auth.tokens import token_url
from hub.config import Settings
from hub.demo.drive import Driver, Told
from hub.demo.scenario import story
from hub.demo.seed import Seeded
from hub.scheduler.sweep import SweepReport, sweep

DIRECTORY_NAME = "carehub-demo"


def demo_directory(settings: Settings) -> Path:
    """Where the demo keeps keys and passwords: `carehub-demo/` beside an SQLite database file,
    else in the working directory."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).resolve().parent / DIRECTORY_NAME
    return Path.cwd() / DIRECTORY_NAME


def tell_story(settings: Settings, seeded: Seeded) -> Told:
    """Post the story to the hub app in this process, over its HTTP routes (the dispatcher
    and the scheduler stay off meanwhile; the served hub pushes, and `first_sweep` runs the
    timed checks once the story is told). Raises DemoError."""
    with warnings.catch_warnings():  # starlette's note about httpx2 is not for demo users
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from hub.app import create_app

    app = create_app(settings.model_copy(update={"dispatcher": False, "scheduler": False}))
    with TestClient(app, base_url=settings.base_url, raise_server_exceptions=False) as http:
        return Driver(http, seeded.clients, token_url(settings)).tell(story(seeded.anchor))


def first_sweep(settings: Settings) -> SweepReport:
    """The timed checks once, as the served hub's scheduler would at start: what the story
    left past due (Ingrid's first contact) is escalated now, also with --no-serve. Exactly
    once: a second run of the demo finds nothing more due."""
    from hub.db.engine import Database

    database = Database.connect(settings)
    try:
        return sweep(database, settings)
    finally:
        database.dispose()
