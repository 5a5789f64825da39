"""Search: token, reference, date and string parameters, paging, sorting and _include."""

from __future__ import annotations

from datetime import date

import httpx
import pytest
from fastapi.testclient import TestClient
from httpx import Response

from hub.config import Settings
from hub.db.engine import Database
from hub.fhir.identifiers import FNR_SYSTEM
from tests.access_clients import other_client
from tests.factories import encounter, fnr, patient, task
from tests.plans import sqlite_plan, statements_of


def _post(client: TestClient, resource: dict) -> str:
    r = client.post(f"/fhir/{resource['resourceType']}", json=resource)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _ids(client: TestClient, url: str, **params: object) -> list[str]:
    r = client.get(url, params=params)
    assert r.status_code == 200, r.text
    return [e["resource"]["id"] for e in r.json()["entry"]
            if e.get("search", {}).get("mode") == "match"]


def test_token_by_system_and_code(client: TestClient) -> None:
    kari = _post(client, patient(fnr(date(1969, 11, 13))))
    ola_number = fnr(date(1980, 2, 1))
    ola = _post(client, patient(ola_number, given="Ola"))
    assert _ids(client, "/fhir/Patient", identifier=f"{FNR_SYSTEM}|{ola_number}") == [ola]
    assert _ids(client, "/fhir/Patient", identifier=ola_number) == [ola]
    assert _ids(client, "/fhir/Patient", identifier=f"urn:other|{ola_number}") == []
    assert sorted(_ids(client, "/fhir/Patient", gender="female")) == sorted([kari, ola])
    assert _ids(client, "/fhir/Patient", **{"gender:not": "female"}) == []


def test_reference_forms(client: TestClient) -> None:
    kari = _post(client, patient())
    other = _post(client, patient(fnr(date(1990, 5, 5))))
    enc = _post(client, encounter(f"Patient/{kari}"))
    _post(client, encounter(f"Patient/{other}"))
    assert _ids(client, "/fhir/Encounter", patient=f"Patient/{kari}") == [enc]
    assert _ids(client, "/fhir/Encounter", subject=kari) == [enc]
    assert _ids(client, "/fhir/Encounter", **{"subject:Patient": kari}) == [enc]
    assert _ids(client, "/fhir/Encounter",
                patient=f"http://testserver/fhir/Patient/{kari}") == [enc]


def test_token_or_and_and(client: TestClient) -> None:
    kari = _post(client, patient())
    enc = _post(client, encounter(f"Patient/{kari}"))
    done = _post(client, encounter(f"Patient/{kari}", status="finished"))
    assert sorted(_ids(client, "/fhir/Encounter", status="in-progress,finished")) == sorted(
        [enc, done])
    r = client.get("/fhir/Encounter", params=[("status", "finished"),
                                              ("patient", f"Patient/{kari}")])
    assert [e["resource"]["id"] for e in r.json()["entry"]] == [done]


def test_date_prefixes_and_precision(client: TestClient) -> None:
    kari = _post(client, patient())
    early = _post(client, encounter(f"Patient/{kari}", start="2026-01-15T10:00:00Z"))
    late = _post(client, encounter(f"Patient/{kari}", start="2026-06-15T10:00:00Z"))
    # An open period runs on; 'eq' needs the whole period inside the day, so use closed ones.
    day = encounter(f"Patient/{kari}")
    day["period"] = {"start": "2026-03-01T08:00:00Z", "end": "2026-03-01T12:00:00Z"}
    mid = _post(client, day)
    assert _ids(client, "/fhir/Encounter", date="2026-03-01") == [mid]
    assert sorted(_ids(client, "/fhir/Encounter", date="ge2026-06-01")) == sorted([early, late])
    assert _ids(client, "/fhir/Encounter", date="lt2026-01-16") == [early]
    assert _ids(client, "/fhir/Encounter", date="sa2026-03-02") == [late]
    r = client.get("/fhir/Encounter", params=[("date", "gt2026-02-28"), ("date", "lt2026-03-02")])
    assert {e["resource"]["id"] for e in r.json()["entry"]} == {mid, early}


def test_string_prefix_folded_and_exact(client: TestClient) -> None:
    aase = _post(client, patient(fnr(date(1950, 1, 1)), family="Ås", given="Åse"))
    berg = _post(client, patient(fnr(date(1960, 1, 1)), family="Berg"))
    assert _ids(client, "/fhir/Patient", name="as") == [aase]
    assert _ids(client, "/fhir/Patient", family="ÅS") == [aase]
    assert _ids(client, "/fhir/Patient", **{"family:exact": "Ås"}) == [aase]
    assert _ids(client, "/fhir/Patient", **{"family:exact": "ås"}) == []
    assert _ids(client, "/fhir/Patient", **{"name:contains": "er"}) == [berg]


def test_last_updated_and_id(client: TestClient) -> None:
    first = client.post("/fhir/Patient", json=patient()).json()
    second = _post(client, patient(fnr(date(1990, 5, 5))))
    stamp = first["meta"]["lastUpdated"]
    assert _ids(client, "/fhir/Patient", _lastUpdated=f"gt{stamp}") == [second]
    assert _ids(client, "/fhir/Patient", _lastUpdated=f"le{stamp}") == [first["id"]]
    assert _ids(client, "/fhir/Patient", _id=f"{first['id']},{second}") == [first["id"], second]


def test_paging_visits_every_match_once(client: TestClient) -> None:
    made = {_post(client, patient(fnr(date(1970, 1, d)))) for d in range(1, 8)}
    seen: list[str] = []
    url: str | None = "/fhir/Patient?_count=3"
    pages = 0
    while url:
        page = client.get(url).json()
        seen += [e["resource"]["id"] for e in page["entry"]]
        url = next((link["url"].replace("http://testserver", "") for link in page["link"]
                    if link["relation"] == "next"), None)
        pages += 1
    assert pages == 3
    assert sorted(seen) == sorted(made)


def test_sort_and_total(client: TestClient) -> None:
    kari = _post(client, patient())
    a = _post(client, encounter(f"Patient/{kari}", start="2026-05-01T00:00:00Z"))
    b = _post(client, encounter(f"Patient/{kari}", start="2026-01-01T00:00:00Z"))
    c = _post(client, encounter(f"Patient/{kari}", start="2026-09-01T00:00:00Z"))
    assert _ids(client, "/fhir/Encounter", _sort="date") == [b, a, c]
    assert _ids(client, "/fhir/Encounter", _sort="-date") == [c, a, b]
    assert _ids(client, "/fhir/Encounter", _sort="-_lastUpdated") == [c, b, a]
    r = client.get("/fhir/Encounter", params={"_total": "accurate", "_count": 1}).json()
    assert r["total"] == 3
    assert client.get("/fhir/Encounter", params={"_sort": "status"}).status_code == 400


def test_unknown_parameter_is_reported_not_silently_applied(client: TestClient) -> None:
    _post(client, patient())
    r = client.get("/fhir/Patient", params={"shoe-size": "42"}).json()
    outcome = [e for e in r["entry"] if e["search"]["mode"] == "outcome"]
    assert "shoe-size" in outcome[0]["resource"]["issue"][0]["diagnostics"]
    assert "shoe-size" not in r["link"][0]["url"]


def test_post_search_takes_a_form_or_the_url_and_refuses_other_bodies(
        client: TestClient) -> None:
    kari = _post(client, patient(fnr(date(1969, 11, 13))))
    ola = _post(client, patient(fnr(date(1980, 2, 1)), given="Ola"))
    url = "/fhir/Patient/_search"

    def found(r: Response) -> list[str]:
        assert r.status_code == 200, r.text
        return [e["resource"]["id"] for e in r.json()["entry"]
                if e.get("search", {}).get("mode") == "match"]

    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert found(client.post(url, content=f"_id={kari}", headers=form)) == [kari]
    assert found(client.post(f"{url}?_id={ola}", content=b"", headers=form)) == [ola]
    default = client.headers.pop("Content-Type")
    try:  # no body and no Content-Type: the criteria are all in the URL
        assert found(client.post(f"{url}?_id={ola}")) == [ola]
        no_type = client.post(url, content=f"_id={kari}")
    finally:
        client.headers["Content-Type"] = default
    for r in (no_type,
              client.post(url, content='{"_id": "no-such-id"}',
                          headers={"Content-Type": "application/json"}),
              client.post(url, content="_id=no-such-id", headers={"Content-Type": "text/plain"})):
        assert r.status_code == 415, r.text
        assert r.json()["resourceType"] == "OperationOutcome"
        assert "application/x-www-form-urlencoded" in r.json()["issue"][0]["diagnostics"]


def test_include_follows_coordinator_references(client: TestClient) -> None:
    kari = _post(client, patient())
    goal = _post(client, {"resourceType": "Goal", "lifecycleStatus": "active",
                          "description": {"text": "Bo i egen leilighet"},
                          "subject": {"reference": f"Patient/{kari}"}})
    team = _post(client, {"resourceType": "CareTeam", "status": "active",
                          "subject": {"reference": f"Patient/{kari}"}})
    plan = _post(client, {"resourceType": "CarePlan", "status": "active", "intent": "plan",
                          "subject": {"reference": f"Patient/{kari}"},
                          "goal": [{"reference": f"Goal/{goal}"}],
                          "careTeam": [{"reference": f"CareTeam/{team}"}]})
    r = client.get("/fhir/CarePlan", params=[("patient", kari), ("_include", "CarePlan:goal"),
                                             ("_include", "CarePlan:care-team")]).json()
    modes = {(e["resource"]["resourceType"], e["search"]["mode"]) for e in r["entry"]}
    assert modes == {("CarePlan", "match"), ("Goal", "include"), ("CareTeam", "include")}
    assert r["entry"][0]["resource"]["id"] == plan

    enc = _post(client, encounter(f"Patient/{kari}"))
    _post(client, task(f"Patient/{kari}", f"Encounter/{enc}"))
    r = client.get("/fhir/Task", params={"_include": "Task:focus"}).json()
    assert [e["resource"]["id"] for e in r["entry"] if e["search"]["mode"] == "include"] == [enc]

    appt = _post(client, {"resourceType": "Appointment", "status": "booked",
                          "start": "2026-12-01T10:00:00Z", "end": "2026-12-01T11:00:00Z",
                          "participant": [{"actor": {"reference": f"Patient/{kari}"},
                                           "status": "accepted"}]})
    r = client.get("/fhir/Appointment", params={"_include": "Appointment:actor"}).json()
    assert [e["resource"]["id"] for e in r["entry"]] == [appt, kari]
    assert client.get("/fhir/Task", params={"_include": "Task:status"}).status_code == 400


def test_updates_reindex(client: TestClient) -> None:
    kari = _post(client, patient())
    enc = client.post("/fhir/Encounter", json=encounter(f"Patient/{kari}")).json()
    client.put(f"/fhir/Encounter/{enc['id']}", json={**enc, "status": "finished"})
    assert _ids(client, "/fhir/Encounter", status="in-progress") == []
    assert _ids(client, "/fhir/Encounter", status="finished") == [enc["id"]]


def test_a_search_keeps_to_its_type_when_others_share_the_value(client: TestClient) -> None:
    """Encounter and Task of one patient share `patient` (and `status`) values: a search of
    one type never returns the other, whichever kind of criterion narrows it (the type is
    left to the index rows when a parameter narrows, and asked of the resource otherwise)."""
    kari = _post(client, patient())
    enc = _post(client, encounter(f"Patient/{kari}", status="in-progress"))
    tsk = _post(client, task(f"Patient/{kari}", f"Encounter/{enc}", status="in-progress"))
    assert _ids(client, "/fhir/Encounter", patient=f"Patient/{kari}") == [enc]
    assert _ids(client, "/fhir/Task", patient=f"Patient/{kari}") == [tsk]
    assert _ids(client, "/fhir/Task", status="in-progress") == [tsk]
    assert _ids(client, "/fhir/Task", _id=f"{enc},{tsk}") == [tsk]
    assert _ids(client, "/fhir/Encounter", **{"status:not": "finished"}) == [enc]
    assert _ids(client, "/fhir/Encounter", **{"location:missing": "true"}) == [enc]
    assert _ids(client, "/fhir/Task", _lastUpdated="ge2000-01-01") == [tsk]


def test_a_search_by_a_parameter_costs_with_its_matches_not_the_store(
        client: TestClient) -> None:
    """SQLite's plan of a parameter search starts from the index rows it matches, not from
    every resource of the type (which made searches slow down with the store's size)."""
    database = client.app.state.database
    if database.dialect != "sqlite":
        pytest.skip("reads SQLite's plan; PostgreSQL plans by its statistics")
    kari = _post(client, patient())
    ran = statements_of(database.engine, lambda: _ids(client, "/fhir/Encounter",
                                                      patient=f"Patient/{kari}"))
    [(statement, params)] = [(st, p) for st, p in ran
                             if st.startswith("SELECT resources.pk") and "search_references" in st]
    plan = sqlite_plan(database.engine, statement, params)
    assert "SEARCH resources USING INTEGER PRIMARY KEY" in plan, plan
    assert "ix_resources_type_updated" not in plan, plan


def _refused(client: TestClient, url: str, params: dict[str, str], *,
             headers: dict[str, str] | None = None) -> str:
    """The diagnostics of the 400 OperationOutcome a search answers."""
    r = client.get(url, params=params, headers=headers)
    assert r.status_code == 400, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    return str(r.json()["issue"][0]["diagnostics"])


def test_id_not_and_missing_apply_their_modifier(client: TestClient, settings: Settings,
                                                 database: Database) -> None:
    """`_id` is a token: `:not` is every resource but those ids (of what the caller may see),
    `:missing=false` all, `:missing=true` none; other modifiers are refused, not dropped."""
    made = sorted(_post(client, patient(fnr(date(1970, 1, d)))) for d in (1, 2, 3))
    with other_client(settings, database, "klepp-kommune") as klepp:
        hidden = _post(klepp, patient(fnr(date(1971, 1, 1))))
        assert _ids(klepp, "/fhir/Patient", _id=hidden) == [hidden]
    assert _ids(client, "/fhir/Patient", _id=hidden) == []
    assert _ids(client, "/fhir/Patient", _id=made[0]) == [made[0]]
    assert sorted(_ids(client, "/fhir/Patient", **{"_id:not": made[0]})) == made[1:]
    assert _ids(client, "/fhir/Patient", **{"_id:not": f"{made[0]},{made[1]}"}) == [made[2]]
    assert sorted(_ids(client, "/fhir/Patient", **{"_id:missing": "false"})) == made
    assert _ids(client, "/fhir/Patient", **{"_id:missing": "true"}) == []
    for modifier in ("contains", "exact", "text", "below"):
        said = _refused(client, "/fhir/Patient", {f"_id:{modifier}": made[0][:6]})
        assert f"Search modifier :{modifier} is not supported on _id" in said


def test_last_updated_missing_applies_and_other_modifiers_are_refused(
        client: TestClient) -> None:
    made = sorted(_post(client, patient(fnr(date(1970, 1, d)))) for d in (1, 2))
    assert sorted(_ids(client, "/fhir/Patient", _lastUpdated="ge2000-01-01")) == made
    assert sorted(_ids(client, "/fhir/Patient", **{"_lastUpdated:missing": "false"})) == made
    assert _ids(client, "/fhir/Patient", **{"_lastUpdated:missing": "true"}) == []
    said = _refused(client, "/fhir/Patient", {"_lastUpdated:missing": "maybe"})
    assert "takes true or false" in said
    assert "not a FHIR date" not in said
    for modifier in ("not", "exact", "contains"):
        said = _refused(client, "/fhir/Patient", {f"_lastUpdated:{modifier}": "ge2000-01-01"})
        assert f"Search modifier :{modifier} is not supported on _lastUpdated" in said


def test_string_modifiers_are_refused_on_other_types(client: TestClient) -> None:
    """`:contains` and `:exact` belong to string parameters: on a token, date or reference
    they are a 400, not the value searched without them."""
    kari = _post(client, patient(family="Modum"))
    enc = _post(client, encounter(f"Patient/{kari}"))
    assert _ids(client, "/fhir/Patient", gender="female") == [kari]
    assert _ids(client, "/fhir/Patient", birthdate="1969") == [kari]
    assert _ids(client, "/fhir/Encounter", subject=f"Patient/{kari}") == [enc]
    assert _ids(client, "/fhir/Patient", **{"family:exact": "Modum"}) == [kari]
    assert _ids(client, "/fhir/Patient", **{"family:contains": "odu"}) == [kari]
    for url, name, value in [("/fhir/Patient", "gender", "fem"),
                             ("/fhir/Patient", "birthdate", "1969"),
                             ("/fhir/Encounter", "subject", f"Patient/{kari}")]:
        for modifier in ("contains", "exact"):
            said = _refused(client, url, {f"{name}:{modifier}": value})
            assert f"Search modifier :{modifier} is not supported on {name}" in said
    assert "not supported" in _refused(client, "/fhir/Patient", {"birthdate:not": "1969"})
    assert _ids(client, "/fhir/Patient", **{"gender:not": "male"}) == [kari]


ESCAPES = "http://x.example/id"


def test_escaped_commas_bars_dollars_and_backslashes_match_the_literal_character(
        client: TestClient) -> None:
    """R4 search.html, "Escaping Search Parameters": `\\,`, `\\|`, `\\$` and `\\\\` stand
    for the character; values split on unescaped commas, a token on its first unescaped `|`;
    the unescaped forms that matched before still do."""
    kari = _post(client, patient(family="Es,Comma", identifier=[
        {"system": ESCAPES, "value": "a|T"}, {"system": ESCAPES, "value": "b\\T"},
        {"system": ESCAPES, "value": "c$T"}]))
    _post(client, patient(fnr(date(1990, 5, 5)), identifier=[
        {"system": ESCAPES, "value": "a"}, {"system": ESCAPES, "value": "b\\\\T"}]))
    enc = _post(client, encounter(f"Patient/{kari}"))
    found = {
        f"{ESCAPES}|a\\|T": [kari], "a\\|T": [kari], f"{ESCAPES}|a\\|X": [],
        f"{ESCAPES}|b\\\\T": [kari], f"{ESCAPES}|c\\$T": [kari],
        f"{ESCAPES}|c$T": [kari], f"{ESCAPES}|b\\T": [kari],  # unescaped, as before
        f"{ESCAPES}|none,{ESCAPES}|a\\|T": [kari],
        f"{ESCAPES}|none\\\\,{ESCAPES}|c$T": [kari],  # an escaped \ then a separating comma
    }
    for value, ids in found.items():
        assert _ids(client, "/fhir/Patient", identifier=value) == ids, value
    assert _ids(client, "/fhir/Patient", family="Es\\,Comma") == [kari]
    assert _ids(client, "/fhir/Patient", **{"family:exact": "Es\\,Comma"}) == [kari]
    assert _ids(client, "/fhir/Encounter",
                **{"subject:Patient.identifier": f"{ESCAPES}|a\\|T"}) == [enc]
    assert _ids(client, "/fhir/Encounter",
                **{"subject:Patient.identifier": f"{ESCAPES}|a"}) == []


def _outcome(r: httpx.Response) -> list[str]:
    return [i["diagnostics"] for e in r.json()["entry"] if e["search"]["mode"] == "outcome"
            for i in e["resource"]["issue"]]


def test_prefer_handling_strict_refuses_what_would_be_ignored(client: TestClient) -> None:
    kari = _post(client, patient())
    query = {"_fooo": "1", "gender": "female"}
    for prefer in (None, "handling=lenient", "handling=lenient, handling=strict"):
        r = client.get("/fhir/Patient", params=query,
                       headers={"Prefer": prefer} if prefer else {})
        assert r.status_code == 200, (prefer, r.text)
        assert "_fooo" in _outcome(r)[0]
    for prefer in ("handling=strict", "return=minimal, handling=strict", 'HANDLING="strict"'):
        said = _refused(client, "/fhir/Patient", query, headers={"Prefer": prefer})
        assert "_fooo" in said
        assert "handling=strict" in said
    chain = {"subject:Patient.organization.partof.partof.name": "x"}  # four links
    assert "subject:Patient" in _refused(client, "/fhir/Encounter", chain,
                                         headers={"Prefer": "handling=strict"})
    strict = {"Prefer": "handling=strict"}
    r = client.get("/fhir/Patient", params={"gender": "female"}, headers=strict)
    assert r.status_code == 200, r.text
    assert [e["resource"]["id"] for e in r.json()["entry"]] == [kari]
    r = client.post("/fhir/Patient/_search", data=query,
                    headers={**strict, "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400, r.text
    assert "_fooo" in r.json()["issue"][0]["diagnostics"]
    r = client.post("/fhir/Patient/_search", data={"gender": "female"},
                    headers={**strict, "Content-Type": "application/x-www-form-urlencoded"})
    assert [e["resource"]["id"] for e in r.json()["entry"]] == [kari]


def test_prefer_handling_strict_fails_a_batch_search_entry(client: TestClient) -> None:
    kari = _post(client, patient())
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient?_fooo=1"}},
        {"request": {"method": "GET", "url": "Patient?gender=female"}}]}
    lenient = client.post("/fhir", json=batch).json()["entry"]
    assert [e["response"]["status"][:3] for e in lenient] == ["200", "200"]
    strict = client.post("/fhir", json=batch, headers={"Prefer": "handling=strict"}).json()
    first, second = strict["entry"]
    assert first["response"]["status"] == "400"
    assert "_fooo" in first["response"]["outcome"]["issue"][0]["diagnostics"]
    assert second["response"]["status"][:3] == "200"
    assert [e["resource"]["id"] for e in second["resource"]["entry"]] == [kari]
