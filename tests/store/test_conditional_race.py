"""The If-None-Exist race made deterministic: a twin arrives while the first is uncommitted."""

from __future__ import annotations

import threading
from datetime import date

from hub.auth.subject import Subject
from hub.db.engine import Database
from hub.fhir.identifiers import FNR_SYSTEM
from hub.store import service
from hub.store.resources import WriteResult
from tests.factories import fnr, patient

NUMBER = fnr(date(1985, 3, 9))
CRITERIA = f"identifier={FNR_SYSTEM}|{NUMBER}"
ME = Subject.working_for("jaeren-dps", "test")


def test_twin_waits_for_the_first_and_returns_its_resource(database: Database) -> None:
    twin: list[WriteResult] = []
    errors: list[BaseException] = []

    def run_twin() -> None:
        try:
            with database.session(write=True) as s:
                twin.append(service.create(s, ME, resource=patient(NUMBER, given="Twin"),
                                           if_none_exist=CRITERIA))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    with database.session(write=True) as first_session:
        first = service.create(first_session, ME, resource=patient(NUMBER),
                               if_none_exist=CRITERIA)
        thread = threading.Thread(target=run_twin)
        thread.start()
        thread.join(1.0)
        # While the first is uncommitted the twin must not have finished with its own insert.
        assert thread.is_alive() or (twin and twin[0].unchanged), twin
    thread.join(30)
    assert not errors, errors
    assert first.created
    assert twin[0].unchanged
    assert not twin[0].created
    assert twin[0].stored.id == first.stored.id
    with database.session(write=False) as s:
        assert len(service.match(s, ME, resource_type="Patient", criteria=CRITERIA, limit=5)) == 1
