"""Isolation in the store: an organisation's client sees and changes only its own records
(plus the shared directory); another organisation's records are as if absent."""

from __future__ import annotations

from datetime import date

import pytest

from hub.auth.subject import Subject
from hub.db.engine import Database
from hub.errors import ConflictError, ForbiddenError, NotFoundError
from hub.fhir.identifiers import FNR_SYSTEM
from hub.store import query as search_mod
from hub.store import service
from tests.factories import fnr, organization, patient

ALL = frozenset({"system/*.*"})
DPS = Subject("client", "dps-ehr", "jaeren-dps", ALL)
TIME = Subject("client", "time-ehr", "time-kommune", ALL)
NUMBER = fnr(date(1975, 6, 1))


def _search(database: Database, who: Subject, rtype: str, *pairs: tuple[str, str]) -> list[str]:
    with database.session(write=False) as s:
        req = search_mod.parse_request(rtype, list(pairs), default_count=50, max_count=50)
        matches, included, _ = service.search(s, who, request=req)
        return [m.id for m in matches + included]


def _create(database: Database, who: Subject, resource: dict, **kw: str) -> str:
    with database.session(write=True) as s:
        return service.create(s, who, resource=resource, **kw).stored.id


def test_foreign_records_are_invisible(database: Database) -> None:
    pid = _create(database, DPS, patient(NUMBER))
    with database.session(write=False) as s:
        assert service.read(s, DPS, resource_type="Patient", resource_id=pid).id == pid
        for call in (
            lambda: service.read(s, TIME, resource_type="Patient", resource_id=pid),
            lambda: service.vread(s, TIME, resource_type="Patient", resource_id=pid,
                                  version_id="1"),
            lambda: service.history(s, TIME, resource_type="Patient", resource_id=pid,
                                    count=10, offset=0),
        ):
            with pytest.raises(NotFoundError) as err:
                call()
            assert "not known" in err.value.diagnostics  # same words as a truly absent id
    assert _search(database, TIME, "Patient") == []
    assert _search(database, TIME, "Patient", ("_id", pid)) == []
    assert _search(database, DPS, "Patient", ("_id", pid)) == [pid]


def test_foreign_records_cannot_be_changed_or_deleted(database: Database) -> None:
    pid = _create(database, DPS, patient(NUMBER))
    with pytest.raises(ConflictError), database.session(write=True) as s:
        service.update(s, TIME, resource_type="Patient", resource_id=pid,
                       resource={**patient(NUMBER), "id": pid})
    with database.session(write=True) as s:
        assert service.delete_resource(s, TIME, resource_type="Patient", resource_id=pid) is None
    with database.session(write=False) as s:
        stored = service.read(s, DPS, resource_type="Patient", resource_id=pid)
        assert stored.version_id == 1


def test_directory_is_shared_but_written_by_the_hub_only(database: Database) -> None:
    with pytest.raises(ForbiddenError), database.session(write=True) as s:
        service.create(s, DPS, resource=organization("983974791", "Jæren DPS"))
    org_id = _create(database, Subject.hub_itself(), organization("983974791", "Jæren DPS"))
    assert _search(database, TIME, "Organization") == [org_id]
    with pytest.raises(ForbiddenError), database.session(write=True) as s:
        service.update(s, TIME, resource_type="Organization", resource_id=org_id,
                       resource={**organization("983974791", "Renamed"), "id": org_id})


def test_conditional_create_of_a_known_person_links_without_revealing_the_record(
        database: Database) -> None:
    """One Patient per person (CONTRACT section 3): Time kommune's conditional create of
    the centre's patient is that Patient, unchanged and not readable to Time (it holds no
    records about the person). Control: the centre's own conditional create matches it."""
    criteria = f"identifier={FNR_SYSTEM}|{NUMBER}"
    dps_id = _create(database, DPS, patient(NUMBER), if_none_exist=criteria)
    with database.session(write=True) as s:
        linked = service.create(s, TIME, resource=patient(NUMBER, given="Other"),
                                if_none_exist=criteria)
    assert (linked.stored.id, linked.created, linked.readable) == (dps_id, False, False)
    with database.session(write=False) as s:
        stored = service.read(s, DPS, resource_type="Patient", resource_id=dps_id)
        assert (stored.version_id, stored.body["name"][0]["given"]) == (1, ["Kari"])
        with pytest.raises(NotFoundError):
            service.read(s, TIME, resource_type="Patient", resource_id=dps_id)
        assert _search(database, Subject.hub_itself(), "Patient") == [dps_id]
    with database.session(write=True) as s:
        again = service.create(s, DPS, resource=patient(NUMBER), if_none_exist=criteria)
    assert (again.stored.id, again.readable) == (dps_id, True)


def test_include_does_not_leak_foreign_targets(database: Database) -> None:
    foreign = _create(database, DPS, patient(NUMBER))
    stay = _create(database, DPS, {
        "resourceType": "Encounter", "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": f"Patient/{foreign}"}})
    team = {"resourceType": "CareTeam", "status": "active",
            "subject": {"reference": f"Patient/{foreign}"},
            "encounter": {"reference": f"Encounter/{stay}"}}
    team_id = _create(database, TIME, team)
    # the centre's stay is not Time kommune's to see, included or not
    assert _search(database, TIME, "CareTeam", ("_include", "CareTeam:encounter")) == [team_id]
    # the Patient is: Time kommune holds a record about the person (CONTRACT section 3)
    assert _search(database, TIME, "CareTeam", ("_include", "CareTeam:patient")) == [
        team_id, foreign]
