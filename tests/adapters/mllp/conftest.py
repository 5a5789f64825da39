"""MLLP fixtures: the registered organisations and a real MLLP listener on loopback."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from adapters.mllp.intake import Intake
from adapters.mllp.server import MllpServer
from adapters.mllp.simulator import Pas, Stay
from hub.audit.recorder import Auditor
from hub.audit.signing import Signer
from hub.auth.subject import Subject
from hub.config import Settings
from hub.db.engine import Database
from hub.fhir.identifiers import HERID_SYSTEM, KOMMUNENUMMER_SYSTEM, ORGNR_SYSTEM
from hub.orgs.service import add_organization

CENTRE_ORGNR = "983974791"
CENTRE_HERID = "8091234"
KOMMUNE = "1121"
FNR = "13116900216"


def register(database: Database, *, endpoint: str | None = None) -> None:
    """Jæren DPS (organisasjonsnummer and HER-id) and Time kommune (kommunenummer 1121)."""
    hub = Subject.hub_itself()
    with database.session(write=True) as s:
        add_organization(s, hub, name="Jæren DPS", kind="mental-health-centre",
                         identifier=f"{ORGNR_SYSTEM}|{CENTRE_ORGNR}", org_id="jaeren-dps",
                         more_identifiers=[f"{HERID_SYSTEM}|{CENTRE_HERID}"])
        add_organization(s, hub, name="Time kommune", kind="municipality",
                         identifier=f"{ORGNR_SYSTEM}|964969590", org_id="time-kommune",
                         more_identifiers=[f"{KOMMUNENUMMER_SYSTEM}|{KOMMUNE}"],
                         endpoint=endpoint)


def stay(visit: str = "V1", *, facility: str = CENTRE_ORGNR, fnr: str = FNR,
         kommune: str = KOMMUNE, days: int = 9) -> Stay:
    """A stay that began `days` + 5 days ago and ended `days` ago."""
    now = datetime.now(UTC).replace(microsecond=0)
    return Stay(facility=facility, fnr=fnr, visit=visit, kommunenummer=kommune,
                admitted=now - timedelta(days=days + 5), discharged=now - timedelta(days=days))


class Listener:
    """An MllpServer on its own event loop in a thread, on a free loopback port."""

    def __init__(self, intake: Intake, *, max_bytes: int = 5 * 1024 * 1024) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = MllpServer(intake, host="127.0.0.1", port=0, max_bytes=max_bytes)
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    @property
    def port(self) -> int:
        return self.server.port

    def pas(self, **kwargs: float) -> Pas:
        return Pas("127.0.0.1", self.port, **kwargs)  # type: ignore[arg-type]

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(20)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def intake(settings: Settings, database: Database) -> Intake:
    register(database)
    return Intake(database, settings, Auditor(Signer.from_file(settings.audit_key_file),
                                              base_url=settings.fhir_base))


@pytest.fixture
def listen(intake: Intake) -> Iterator[Callable[..., Listener]]:
    made: list[Listener] = []

    def start(**kwargs: int) -> Listener:
        made.append(Listener(intake, **kwargs))
        return made[-1]

    yield start
    for listener in made:
        listener.stop()
