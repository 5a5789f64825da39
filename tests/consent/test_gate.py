"""The consent gate over the real store: what another organisation may see of a patient."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from hub.auth.subject import Subject
from hub.db.engine import Database
from hub.errors import NotFoundError
from hub.store import query as search_mod
from hub.store import service
from tests.factories import consent, encounter, fnr, patient

ALL = frozenset({"system/*.*"})
DPS = Subject("client", "dps-ehr", "jaeren-dps", ALL)
TIME = Subject("client", "time-ehr", "time-kommune", ALL)
KLEPP = Subject("client", "klepp-ehr", "klepp-kommune", ALL)


def _create(db: Database, who: Subject, body: dict[str, Any]) -> str:
    with db.session(write=True) as s:
        return service.create(s, who, resource=body).stored.id


def _ids(db: Database, who: Subject, rtype: str, *pairs: tuple[str, str],
         count: int = 50) -> list[str]:
    with db.session(write=False) as s:
        req = search_mod.parse_request(rtype, list(pairs), default_count=count, max_count=500)
        matches, included, _ = service.search(s, who, request=req)
        return [m.id for m in matches + included]


def _can_read(db: Database, who: Subject, rtype: str, rid: str) -> bool:
    with db.session(write=False) as s:
        try:
            service.read(s, who, resource_type=rtype, resource_id=rid)
        except NotFoundError:
            return False
        return True


@pytest.fixture
def story(database: Database) -> dict[str, str]:
    pid = _create(database, DPS, patient(fnr(date(1969, 11, 13))))
    enc = _create(database, DPS, encounter(f"Patient/{pid}"))
    plan = _create(database, DPS, {"resourceType": "CarePlan", "status": "active",
                                   "intent": "plan", "category": [{"text": "individuell plan"}],
                                   "subject": {"reference": f"Patient/{pid}"}})
    return {"patient": pid, "encounter": enc, "plan": plan}


def test_nothing_without_consent(database: Database, story: dict[str, str]) -> None:
    for rtype, key in (("Patient", "patient"), ("Encounter", "encounter")):
        assert not _can_read(database, TIME, rtype, story[key])
        assert _ids(database, TIME, rtype) == []


def test_consent_discloses_to_the_named_organisation_only(database: Database,
                                                          story: dict[str, str]) -> None:
    _create(database, DPS, consent(story["patient"], "time-kommune"))
    assert _can_read(database, TIME, "Patient", story["patient"])
    assert _can_read(database, TIME, "Encounter", story["encounter"])
    assert _ids(database, TIME, "Encounter", ("patient", story["patient"])) == [
        story["encounter"]]
    assert not _can_read(database, KLEPP, "Encounter", story["encounter"])
    assert _ids(database, KLEPP, "Encounter") == []


def test_class_narrows_what_is_disclosed(database: Database, story: dict[str, str]) -> None:
    _create(database, DPS, consent(story["patient"], "time-kommune", classes=["Encounter"]))
    assert _can_read(database, TIME, "Encounter", story["encounter"])
    assert not _can_read(database, TIME, "Patient", story["patient"])


def test_individual_plan_needs_the_consent_to_make_it_too(database: Database,
                                                           story: dict[str, str]) -> None:
    _create(database, DPS, consent(story["patient"], "time-kommune"))
    assert not _can_read(database, TIME, "CarePlan", story["plan"])
    # the consent to the plan must itself permit the receiver (CONTRACT 5)
    _create(database, DPS, consent(story["patient"], "klepp-kommune", category="individual-plan"))
    assert not _can_read(database, TIME, "CarePlan", story["plan"])
    _create(database, DPS, consent(story["patient"], "time-kommune", category="individual-plan"))
    assert _can_read(database, TIME, "CarePlan", story["plan"])


def test_revocation_applies_from_the_moment_it_is_stored(database: Database,
                                                         story: dict[str, str]) -> None:
    cid = _create(database, DPS, consent(story["patient"], "time-kommune"))
    assert _can_read(database, TIME, "Encounter", story["encounter"])
    with database.session(write=True) as s:
        service.update(s, DPS, resource_type="Consent", resource_id=cid,
                       resource={**consent(story["patient"], "time-kommune", status="inactive"),
                                 "id": cid})
    assert not _can_read(database, TIME, "Encounter", story["encounter"])
    assert _ids(database, TIME, "Encounter") == []


def test_expired_consent_discloses_nothing(database: Database, story: dict[str, str]) -> None:
    _create(database, DPS, consent(story["patient"], "time-kommune", end="2026-02-01"))
    assert not _can_read(database, TIME, "Encounter", story["encounter"])


def test_paging_is_exact_when_the_gate_drops_rows(database: Database) -> None:
    """Encounters of a consenting and a non-consenting patient, interleaved: every page of
    Time kommune's search is full, no id repeats, and all consented ones come back."""
    yes = _create(database, DPS, patient(fnr(date(1980, 1, 1))))
    no = _create(database, DPS, patient(fnr(date(1981, 1, 1))))
    _create(database, DPS, consent(yes, "time-kommune"))
    # An expired consent naming Time kommune gets the second patient past the SQL pre-filter,
    # so the policy has to drop those rows one by one.
    _create(database, DPS, consent(no, "time-kommune", end="2026-02-01"))
    wanted = []
    for _ in range(12):
        wanted.append(_create(database, DPS, encounter(f"Patient/{yes}")))
        _create(database, DPS, encounter(f"Patient/{no}"))
    seen: list[str] = []
    offset: int | None = 0
    with database.session(write=False) as s:
        while offset is not None:
            req = search_mod.parse_request("Encounter", [("_offset", str(offset))],
                                           default_count=5, max_count=5)
            matches, _, page = service.search(s, TIME, request=req)
            assert len(matches) == 5 or page.next_offset is None
            seen += [m.id for m in matches]
            offset = page.next_offset
    assert seen == wanted


def test_decisions_are_left_for_the_audit_trail(database: Database,
                                                story: dict[str, str]) -> None:
    cid = _create(database, DPS, consent(story["patient"], "time-kommune"))
    with database.session(write=False) as s:
        service.read(s, TIME, resource_type="Encounter", resource_id=story["encounter"])
        (decision,) = [d for d in s.info["disclosures"]
                       if d["resources"] == [f"Encounter/{story['encounter']}"]]
    assert decision["decision"] == "permit"
    assert decision["basis"] == f"Consent/{cid}"
    assert decision["recipient"] == "Organization/time-kommune"
    assert decision["patient"] == f"Patient/{story['patient']}"


def test_owner_sees_its_own_without_any_decision(database: Database,
                                                 story: dict[str, str]) -> None:
    with database.session(write=False) as s:
        service.read(s, DPS, resource_type="Encounter", resource_id=story["encounter"])
        assert s.info.get("disclosures", []) == []
