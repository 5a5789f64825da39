"""User-controlled admission end to end over HTTP (issue 6, CONTRACT section 4): the terms,
every request kept, the hub's answer to what breaks the terms, beds and the next possible
date, the last bed under concurrency, long stays flagged, and the figures."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hub.app import create_app
from hub.config import Settings
from hub.db.engine import Database
from tests.audit.trail import mark, since
from tests.ui.conftest import make_user, sign_in
from tests.workflows import adm_messages
from tests.workflows.adm_messages import (
    CENTRE,
    INGRID,
    KARI,
    KLEPP,
    OLA,
    TIME,
    URI,
    Clients,
    agreement,
    issues,
    post,
    request,
    response,
    said,
)

parties = adm_messages.parties  # the fixture: Jæren DPS, Time kommune, Klepp kommune
FLAG_SYSTEM = "http://carehub.example/fhir/NamingSystem/self-admission-long-stay"
OUTCOME_SYSTEM = "http://carehub.example/fhir/CodeSystem/self-admission-outcome"


def day(month_day: str, time: str = "10:00") -> str:
    """A moment of 2026 in Norwegian winter time: day("03-02") is 2 March 10:00."""
    return f"2026-{month_day}T{time}:00+01:00"


def stored(client: TestClient, rtype: str, name: str) -> dict[str, Any]:
    """The one stored resource with the sender-chosen identifier `name`."""
    found = client.get(f"/fhir/{rtype}", params={"identifier": f"{URI}|{name}"}).json()
    assert len(found.get("entry", [])) == 1, found
    resource: dict[str, Any] = found["entry"][0]["resource"]
    return resource


def absent(client: TestClient, rtype: str, name: str) -> bool:
    """True when nothing with identifier `name` is stored."""
    found = client.get(f"/fhir/{rtype}", params={"identifier": f"{URI}|{name}"}).json()
    return not found.get("entry")


def figures(client: TestClient, path: str) -> dict[str, Any]:
    """The $self-admission-figures of `path` (ServiceRequest/x or Location/y) by name, with
    the rejections by reason under 'rejected-by-reason'."""
    r = client.get(f"/fhir/{path}/$self-admission-figures")
    assert r.status_code == 200, r.text
    out: dict[str, Any] = {}
    for p in r.json()["parameter"]:
        out[p["name"]] = next(v for k, v in p.items() if k.startswith("value"))
        if "part" in p:
            out[f"{p['name']}-by-reason"] = {q["name"]: q["valueInteger"] for q in p["part"]}
    return out


def agreement_path(clients: Clients, name: str) -> str:
    return f"ServiceRequest/{stored(clients[CENTRE], 'ServiceRequest', name)['id']}"


def ok(clients: Clients, message: dict[str, Any]) -> Any:
    r = post(clients, message)
    assert r.status_code == 200, r.text
    return r


def admit(clients: Clients, person: str, name: str, agreement_name: str, start: str, end: str,
          sender: str = TIME) -> None:
    """A request within the terms, and the centre's acceptance."""
    r = ok(clients, request(person, name=name, agreement_name=agreement_name, start=start,
                            end=end, sender=sender))
    assert "within the terms" in said(r), said(r)
    ok(clients, response(person, name=name, agreement_name=agreement_name, start=start, end=end,
                         requester=sender))


def test_request_within_the_terms_is_admitted_and_terms_default(parties: Clients) -> None:
    ok(parties, agreement(KARI, name="avtale-kari", max_days=None, min_days=None, beds=1))
    path = agreement_path(parties, "avtale-kari")
    terms = figures(parties[CENTRE], path)
    assert (terms["max-days-per-stay"], terms["min-days-between-stays"]) == (5, 14)

    r = ok(parties, request(KARI, name="ber-1", agreement_name="avtale-kari",
                            start=day("03-02"), end=day("03-05")))
    assert "within the terms" in said(r)
    assert said(r, "warning") == ""
    assert stored(parties[TIME], "Task", "ber-1")["status"] == "requested"
    assert figures(parties[TIME], path)["pending"] == 1

    r = ok(parties, response(KARI, name="ber-1", agreement_name="avtale-kari",
                             start=day("03-02"), end=day("03-05"), arrival=day("03-02", "18:30")))
    assert "Admission recorded" in said(r)
    fig = figures(parties[CENTRE], path)
    assert (fig["requests"], fig["admissions"], fig["share-admitted"], fig["days-used"],
            fig["pending"]) == (1, 1, 1, 3, 0)


def _expired(clients: Clients) -> None:
    ok(clients, agreement(KARI, name="avtale", end="2026-06-30T23:59:59+02:00"))


def _not_yet_valid(clients: Clients) -> None:
    ok(clients, agreement(KARI, name="avtale", start="2026-03-01T00:00:00+01:00"))


def _revoked(clients: Clients) -> None:
    ok(clients, agreement(KARI, name="avtale"))
    ok(clients, agreement(KARI, name="avtale", status="revoked"))


def _stayed_recently(clients: Clients) -> None:
    ok(clients, agreement(KARI, name="avtale"))
    admit(clients, KARI, "forrige", "avtale", day("03-02"), day("03-05"))


OUTSIDE_TERMS: list[tuple[str, Callable[[Clients], None], str, str, str, str, str | None]] = [
    # id, setup, stay asked for, reason code, what the reason says, next possible date
    ("expired", _expired, day("07-10"), day("07-13"), "outside-valid-period",
     "outside the agreement's valid period (2026-01-01 to 2026-06-30)", None),
    ("not-yet-valid", _not_yet_valid, day("02-20"), day("02-23"), "outside-valid-period",
     "outside the agreement's valid period (2026-03-01", "2026-03-01"),
    ("revoked", _revoked, day("03-02"), day("03-05"), "agreement-not-active",
     "is revoked, not active", None),
    ("too-soon", _stayed_recently, day("03-10"), day("03-12"), "too-soon",
     "too soon after the stay that ends 2026-03-05 under this agreement: at least 14 days",
     "2026-03-19"),
]


@pytest.mark.parametrize(("setup", "start", "end", "code", "reason", "next_on"),
                         [c[1:] for c in OUTSIDE_TERMS], ids=[c[0] for c in OUTSIDE_TERMS])
def test_request_outside_the_terms_is_kept_and_answered_with_the_reason(
        parties: Clients, setup: Callable[[Clients], None], start: str, end: str, code: str,
        reason: str, next_on: str | None) -> None:
    setup(parties)
    r = ok(parties, request(KARI, name="ber", agreement_name="avtale", start=start, end=end))
    warning = said(r, "warning")
    assert "recorded, but the hub has rejected it" in warning
    assert reason in warning
    assert (f"next possible date for a stay of this length is {next_on}" in warning
            if next_on else "next possible date for" not in warning)

    task = stored(parties[TIME], "Task", "ber")
    assert task["status"] == "rejected"
    assert task["statusReason"]["coding"][0] == {
        "system": OUTCOME_SYSTEM, "code": code, "display": task["statusReason"]["coding"][0][
            "display"]}
    assert [o["valueDate"] for o in task.get("output", [])] == ([next_on] if next_on else [])
    history = parties[TIME].get(f"/fhir/Task/{task['id']}/_history").json()["entry"]
    assert [e["resource"]["status"] for e in history] == ["rejected", "requested"]  # kept

    accept = post(parties, response(KARI, name="ber", agreement_name="avtale", start=start,
                                    end=end))
    assert accept.status_code == 422, accept.text
    assert reason in said(accept)
    assert stored(parties[TIME], "Task", "ber")["meta"]["versionId"] == "2"  # unchanged
    ok(parties, response(KARI, name="ber", agreement_name="avtale", start=start, end=end,
                         status="rejected", reason="Avtalen gjelder ikke."))
    fig = figures(parties[CENTRE], agreement_path(parties, "avtale"))
    assert fig["rejected-by-reason"] == {code: 1}


def test_beds_are_counted_at_each_moment_and_the_next_possible_date_is_given(
        parties: Clients) -> None:
    for person, name, to in ((KARI, "avtale-kari", TIME), (OLA, "avtale-ola", TIME),
                             (INGRID, "avtale-ingrid", KLEPP)):
        ok(parties, agreement(person, name=name, beds=2, min_days=0, to=(to,)))
    admit(parties, KARI, "k1", "avtale-kari", day("03-01"), day("03-04"))
    admit(parties, OLA, "o1", "avtale-ola", day("03-05"), day("03-08"))
    # Two stays overlap the stay asked for, but never at the same moment: one bed is free.
    r = ok(parties, request(INGRID, name="i1", agreement_name="avtale-ingrid", sender=KLEPP,
                            start=day("03-03"), end=day("03-06")))
    assert "within the terms" in said(r)
    # Ingrid's request is not answered yet, but holds its bed: 5-6 March is full.
    r = ok(parties, request(KARI, name="k2", agreement_name="avtale-kari",
                            start=day("03-05"), end=day("03-07")))
    assert "All 2 user-controlled beds of Døgnenhet, Jæren DPS are taken" in said(r, "warning")
    k2 = stored(parties[TIME], "Task", "k2")
    assert k2["statusReason"]["coding"][0]["code"] == "no-free-bed"
    assert k2["output"][0]["valueDate"] == "2026-03-06"  # Ingrid's request ends 6 March 10:00
    # The centre turns Ingrid down: her bed is free again, and Kari may have it.
    ok(parties, response(INGRID, name="i1", agreement_name="avtale-ingrid", requester=KLEPP,
                         start=day("03-03"), end=day("03-06"), status="rejected",
                         reason="Pasienten er innlagt annet sted."))
    admit(parties, KARI, "k3", "avtale-kari", day("03-05"), day("03-07"))
    unit = stored(parties[CENTRE], "Location", "unit-jaeren")["id"]
    fig = figures(parties[CENTRE], f"Location/{unit}")
    assert (fig["beds"], fig["agreements"], fig["requests"], fig["admissions"],
            fig["days-used"]) == (2, 3, 5, 3, 8)
    assert fig["rejected-by-reason"] == {"centre": 1, "no-free-bed": 1}


def test_two_requests_at_once_for_the_last_bed_give_one_admission(parties: Clients) -> None:
    ok(parties, agreement(KARI, name="avtale-kari", beds=1, to=(TIME,)))
    ok(parties, agreement(OLA, name="avtale-ola", beds=1, to=(KLEPP,)))
    asks = {TIME: request(KARI, name="k", agreement_name="avtale-kari", sender=TIME,
                          start=day("04-01"), end=day("04-03")),
            KLEPP: request(OLA, name="o", agreement_name="avtale-ola", sender=KLEPP,
                           start=day("04-02"), end=day("04-04"))}
    start = threading.Barrier(2)
    answers: dict[str, int] = {}

    def ask(org: str) -> None:
        start.wait()
        answers[org] = post(parties, asks[org]).status_code

    threads = [threading.Thread(target=ask, args=(org,)) for org in asks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert answers == {TIME: 200, KLEPP: 200}  # both kept
    statuses = sorted([stored(parties[TIME], "Task", "k")["status"],
                       stored(parties[KLEPP], "Task", "o")["status"]])
    assert statuses == ["rejected", "requested"]
    accepted = [post(parties, response(person, name=name, agreement_name=agr, requester=org,
                                       start=asks[org]["entry"][1]["resource"]["restriction"][
                                           "period"]["start"],
                                       end=asks[org]["entry"][1]["resource"]["restriction"][
                                           "period"]["end"])).status_code
                for person, name, agr, org in ((KARI, "k", "avtale-kari", TIME),
                                               (OLA, "o", "avtale-ola", KLEPP))]
    assert sorted(accepted) == [200, 422]
    unit = stored(parties[CENTRE], "Location", "unit-jaeren")["id"]
    assert figures(parties[CENTRE], f"Location/{unit}")["admissions"] == 1


def test_a_stay_longer_than_the_maximum_is_flagged(parties: Clients) -> None:
    ok(parties, agreement(KARI, name="avtale", max_days=3))
    r = ok(parties, request(KARI, name="lang", agreement_name="avtale",
                            start=day("04-01"), end=day("04-06")))
    assert "within the terms" in said(r)
    assert "The stay is 5 days, longer than the 3 days a stay the agreement allows" in said(
        r, "warning")
    task = stored(parties[TIME], "Task", "lang")
    assert task["status"] == "requested"  # flagged, not refused
    flags = parties[CENTRE].get("/fhir/Flag", params={
        "identifier": f"{FLAG_SYSTEM}|{task['id']}"}).json()["entry"]
    assert len(flags) == 1
    flag = flags[0]["resource"]
    assert flag["status"] == "active"
    assert flag["subject"]["reference"] == task["for"]["reference"]
    ok(parties, response(KARI, name="lang", agreement_name="avtale", start=day("04-01"),
                         end=day("04-06")))
    fig = figures(parties[CENTRE], agreement_path(parties, "avtale"))
    assert (fig["admissions"], fig["days-used"], fig["stays-over-maximum"]) == (1, 5, 1)
    assert len(parties[CENTRE].get("/fhir/Flag").json()["entry"]) == 1  # flagged once


STAY = {"start": day("03-02"), "end": day("03-05")}
VIOLATIONS: list[tuple[str, dict[str, Any] | Callable[[], dict[str, Any]], str, str, str]] = [
    # id, message, the Task/ServiceRequest it must not leave behind, diagnostics, expression
    ("unknown-agreement", lambda: request(KARI, name="x", agreement_name="ingen", **STAY), "x",
     "focus names no self-admission agreement the hub knows", "Bundle.entry[1].resource.focus"),
    ("other-patient", lambda: request(OLA, name="x", agreement_name="avtale", **STAY), "x",
     "is for Patient/", "Bundle.entry[1].resource.for"),
    ("owner-not-the-centre", lambda: request(KARI, name="x", agreement_name="avtale",
                                             owner=KLEPP, **STAY), "x",
     "owner must be the centre of the agreement, Organization/jaeren-dps",
     "Bundle.entry[1].resource.owner"),
    ("not-party", lambda: request(KARI, name="x", agreement_name="avtale", sender=KLEPP,
                                  **STAY), "x",
     "Organization/klepp-kommune is not party to the agreement",
     "Bundle.entry[1].resource.requester"),
    ("answer-to-nothing", lambda: response(KARI, name="x", agreement_name="avtale", **STAY),
     "x", "is not stored here, and a new Task starts as requested",
     "Bundle.entry[1].resource.identifier"),
    ("municipality-accepts", lambda: response(KARI, name="ber", agreement_name="avtale",
                                              sender=TIME, **STAY), "",
     "Only the Task's owner, Organization/jaeren-dps, may set it to accepted",
     "Bundle.entry[1].resource.status"),
    ("arrival-after-the-stay", lambda: response(KARI, name="ber", agreement_name="avtale",
                                                arrival=day("03-06"), **STAY), "",
     "is not before the end of the stay", "Bundle.entry[1].resource.output"),
    ("unit-of-another", lambda: agreement(KARI, name="y", unit="unit-klepp",
                                          unit_manager=KLEPP), "y",
     "belongs to Organization/klepp-kommune", "Bundle.entry[1].resource.locationReference"),
    ("agreement-changes-patient", lambda: agreement(OLA, name="avtale"), "",
     "is the agreement of Patient/", "Bundle.entry[1].resource.subject"),
]


@pytest.mark.parametrize(("build", "left", "text", "expression"),
                         [v[1:] for v in VIOLATIONS], ids=[v[0] for v in VIOLATIONS])
def test_each_broken_rule_is_422_and_nothing_is_stored(
        parties: Clients, build: Callable[[], dict[str, Any]], left: str, text: str,
        expression: str) -> None:
    ok(parties, agreement(KARI, name="avtale", beds=1))
    ok(parties, request(KARI, name="ber", agreement_name="avtale", **STAY))
    r = post(parties, build())
    assert r.status_code == 422, r.text
    problem = issues(r)[0]
    assert text in problem["diagnostics"]
    assert problem["expression"] == [expression]
    if left:
        for client in parties.values():
            assert absent(client, "Task", left)
            assert absent(client, "ServiceRequest", left)
    assert stored(parties[TIME], "Task", "ber")["meta"]["versionId"] == "1"
    assert stored(parties[CENTRE], "ServiceRequest", "avtale")["meta"]["versionId"] == "1"
    fig = figures(parties[CENTRE], agreement_path(parties, "avtale"))
    assert (fig["requests"], fig["pending"], fig["admissions"]) == (1, 1, 0)


def test_figures_after_a_year_of_requests(parties: Clients) -> None:
    ok(parties, agreement(KARI, name="avtale", max_days=5, min_days=14, beds=2))
    admit(parties, KARI, "r1", "avtale", day("03-02"), day("03-05"))               # 3 days
    ok(parties, request(KARI, name="r2", agreement_name="avtale",                 # too soon
                        start=day("03-10"), end=day("03-12")))
    admit(parties, KARI, "r3", "avtale", day("04-01"), day("04-07"))               # 6 days
    ok(parties, request(KARI, name="r4", agreement_name="avtale",
                        start=day("05-01"), end=day("05-03")))
    ok(parties, response(KARI, name="r4", agreement_name="avtale", status="rejected",
                         start=day("05-01"), end=day("05-03"), reason="Enheten er stengt."))
    ok(parties, request(KARI, name="r5", agreement_name="avtale",                 # pending
                        start=day("06-01"), end=day("06-03")))
    ok(parties, agreement(KARI, name="avtale", max_days=4, min_days=10, beds=3))  # new terms

    path = agreement_path(parties, "avtale")
    fig = figures(parties[CENTRE], path)
    assert (fig["requests"], fig["admissions"], fig["share-admitted"], fig["days-used"],
            fig["stays-over-maximum"], fig["pending"], fig["rejected"]) == (5, 2, 0.4, 9, 1,
                                                                            1, 2)
    assert fig["rejected-by-reason"] == {"centre": 1, "too-soon": 1}
    assert (fig["max-days-per-stay"], fig["min-days-between-stays"]) == (4, 10)
    assert figures(parties[TIME], path)["requests"] == 5  # the municipality is party to it

    unit = f"Location/{stored(parties[CENTRE], 'Location', 'unit-jaeren')['id']}"
    by_unit = figures(parties[CENTRE], unit)
    assert by_unit["beds"] == 3
    assert {k: by_unit[k] for k in ("requests", "admissions", "days-used")} == {
        "requests": 5, "admissions": 2, "days-used": 9}
    # Klepp kommune is no party: for it the agreement and the unit do not exist.
    for what in (path, unit):
        denied = parties[KLEPP].get(f"/fhir/{what}/$self-admission-figures")
        assert denied.status_code == 404
        assert denied.json()["resourceType"] == "OperationOutcome"


def test_figures_are_for_coordinators_of_a_party_and_audited(
        parties: Clients, settings: Settings, database: Database) -> None:
    ok(parties, agreement(KARI, name="avtale"))
    admit(parties, KARI, "r1", "avtale", day("03-02"), day("03-05"))
    path = agreement_path(parties, "avtale")
    patient = stored(parties[TIME], "Task", "r1")["for"]["reference"]
    make_user(database, "kari.koordinator", role="coordinator", organization_id=CENTRE)
    make_user(database, "per.koordinator", role="coordinator", organization_id=KLEPP)
    seen = {}
    for username in ("kari.koordinator", "per.koordinator"):
        with TestClient(create_app(settings), base_url="https://testserver",
                        follow_redirects=False, raise_server_exceptions=False) as person:
            assert sign_in(person, username).status_code in (302, 303)
            seen[username] = person.get(f"/fhir/{path}/$self-admission-figures")
    assert seen["kari.koordinator"].status_code == 200, seen["kari.koordinator"].text
    assert seen["per.koordinator"].status_code == 404

    before = mark(database)
    figures(parties[CENTRE], path)
    [record] = [r for r in since(database, before) if path in r.entity_refs()]
    assert record.outcome == "0"
    assert record.patients() == [patient]


def test_the_capability_statement_lists_the_figures(parties: Clients) -> None:
    meta = parties[CENTRE].get("/fhir/metadata").json()
    ops = {r["type"]: {o["name"] for o in r.get("operation", [])}
           for r in meta["rest"][0]["resource"]}
    assert "self-admission-figures" in ops["ServiceRequest"]
    assert "self-admission-figures" in ops["Location"]


def test_a_stay_given_in_dates_counts_its_last_day(parties: Clients) -> None:
    ok(parties, agreement(KARI, name="avtale", max_days=3))
    r = ok(parties, request(KARI, name="datoer", agreement_name="avtale", start="2026-04-01",
                            end="2026-04-03"))
    assert said(r, "warning") == ""  # 1, 2 and 3 April: three days, within the maximum
    ok(parties, response(KARI, name="datoer", agreement_name="avtale", start="2026-04-01",
                         end="2026-04-03", arrival="2026-04-01T09:00:00+02:00"))
    assert figures(parties[CENTRE], agreement_path(parties, "avtale"))["days-used"] == 3
    r = ok(parties, request(KARI, name="for-tidlig", agreement_name="avtale",
                            start="2026-04-10", end="2026-04-11"))
    assert "too soon after the stay that ends 2026-04-03" in said(r, "warning")
    assert "next possible date for a stay of this length is 2026-04-18" in said(r, "warning")
