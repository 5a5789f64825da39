"""The delivery API of CONTRACT 6 over HTTP: the pull, $delivery-status, $replay; and acks."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hub.auth.subject import Subject
from hub.auth.users import add_user
from hub.config import Settings
from hub.db.engine import Database
from hub.delivery import service
from hub.delivery.dispatcher import sweep
from hub.errors import InvalidResourceError, NotFoundError
from hub.messaging.models import DeliveryRow, MessageRow
from hub.store.dates import format_instant
from tests.audit.trail import mark, since
from tests.delivery.conftest import Auth, ReceiverFactory, sweep_until
from tests.delivery.factory import (
    accept,
    accept_in,
    add_consent,
    add_org,
    add_patient,
    deliveries,
    delivery,
    revoke_consent,
)
from tests.delivery.receivers import Reply

SENDER, TIME, KLEPP = "sender", "time", "klepp"
PULL = "/fhir/Bundle"


def _pull(api: TestClient, headers: dict[str, str], url: str = PULL,
          **params: str) -> dict[str, Any]:
    r = api.get(url, params=params or None, headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert (body["resourceType"], body["type"]) == ("Bundle", "searchset")
    return body


def _header_ids(page: dict[str, Any]) -> list[str]:
    return [e["resource"]["entry"][0]["resource"]["id"] for e in page.get("entry", [])]


def _next(page: dict[str, Any]) -> str | None:
    return next((ln["url"] for ln in page.get("link", []) if ln["relation"] == "next"), None)


def test_pull_pages_oldest_first_and_never_skips(
        api: TestClient, auth: Auth, database: Database, fast: Settings) -> None:
    add_org(database, SENDER)
    add_org(database, TIME)  # no Endpoint: pulls
    p1, p2 = add_patient(database, 1), add_patient(database, 2)
    sent = [accept(database, fast, sender=SENDER, receivers=[TIME], patient_id=p)
            for p in (p1, p2, p1, p2, p1)]
    sweep(database, fast)
    me = auth(TIME)
    seen: list[str] = []
    stamps: list[str] = []
    page = _pull(api, me, **{"message.receiver": f"Organization/{TIME}", "_count": "2"})
    pages = 1
    while True:
        for e in page["entry"]:
            assert re.fullmatch(rf"{fast.fhir_base}/Bundle/[\w-]+", e["fullUrl"])
            assert e["fullUrl"].endswith("/" + e["resource"]["id"])
            stamps.append(e["resource"]["meta"]["lastUpdated"])
        seen += _header_ids(page)
        if pages == 1:  # more arrive while the receiver pages
            sent += [accept(database, fast, sender=SENDER, receivers=[TIME], patient_id=p2)
                     for _ in range(2)]
            sweep(database, fast)
        url = _next(page)
        if url is None:
            break
        page, pages = _pull(api, me, url), pages + 1
    assert seen == [s.header_id for s in sent]  # all, oldest first, none skipped or twice
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == len(stamps)
    published = {d.id: d.published_at for d in deliveries(database)}
    assert stamps == [format_instant(published[s.deliveries[TIME]] or datetime.min) for s in sent]
    assert all(d.status == "delivered" and d.delivered_at for d in deliveries(database))
    # nothing new after the last one
    last = _pull(api, me, **{"message.receiver": f"Organization/{TIME}",
                             "_lastUpdated": f"gt{stamps[-1]}"})
    assert last["entry"] == []
    assert _next(last) is None


def test_a_late_commit_is_published_after_what_the_receiver_saw(
        database: Database, fast: Settings) -> None:
    """Message 1 gets its row id first but commits after message 2 has been published and
    pulled: it is published later, so the receiver's cursor does not pass over it."""
    if database.dialect != "postgresql":
        pytest.skip("SQLite writers run one at a time: rows commit in id order")
    add_org(database, SENDER)
    add_org(database, TIME)
    p = add_patient(database)
    me = Subject("client", "time-ehr", TIME, frozenset({"system/*.*"}))
    with database.session(write=True) as late:
        m1 = accept_in(late, fast, sender=SENDER, receivers=[TIME], patient_id=p)
        m2 = accept(database, fast, sender=SENDER, receivers=[TIME], patient_id=p)
        assert m1.deliveries[TIME] < m2.deliveries[TIME]
        sweep(database, fast)
        with database.session(write=True) as s:
            first = service.pull(s, me, fast, since=None, count=10)
        assert [row.id for row, _ in first] == [m2.deliveries[TIME]]
        cursor = first[-1][0].published_at
    sweep(database, fast)
    with database.session(write=True) as s:
        second = service.pull(s, me, fast, since=cursor, count=10)
    assert [row.id for row, _ in second] == [m1.deliveries[TIME]]


def test_pull_is_for_the_receiver_itself(api: TestClient, auth: Auth, database: Database,
                                         fast: Settings) -> None:
    add_org(database, SENDER)
    add_org(database, TIME)
    accept(database, fast, sender=SENDER, receivers=[TIME], patient_id=add_patient(database))
    sweep(database, fast)
    r = api.get(PULL, params={"message.receiver": f"Organization/{TIME}"}, headers=auth(SENDER))
    assert r.status_code == 403
    assert r.json()["resourceType"] == "OperationOutcome"
    assert api.get(PULL, params={"message.receiver": f"Organization/{TIME}"}).status_code == 401
    bad = api.get(PULL, params={"message.receiver": f"Organization/{TIME}",
                                "_lastUpdated": "lt2026-01-01"}, headers=auth(TIME))
    assert bad.status_code == 400


def test_bundle_search_without_message_receiver_is_the_generic_search(
        api: TestClient, auth: Auth, database: Database, fast: Settings) -> None:
    add_org(database, SENDER)
    add_org(database, TIME)
    accept(database, fast, sender=SENDER, receivers=[TIME], patient_id=add_patient(database))
    r = api.get(PULL, params={"_count": "5"}, headers=auth(TIME))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["type"] == "searchset"
    assert any(ln["url"].startswith(f"{fast.fhir_base}/Bundle?") and "_offset" in ln["url"]
               for ln in body["link"])  # the generic search's paging, not the pull's


def test_pull_decides_again_and_redacts(
        api: TestClient, auth: Auth, database: Database, fast: Settings) -> None:
    add_org(database, SENDER)
    add_org(database, TIME)
    p = add_patient(database)
    cid = add_consent(database, p, TIME)
    plan = {"resourceType": "CarePlan", "status": "active", "intent": "plan",
            "identifier": [{"system": "urn:test", "value": "plan-2"}],
            "category": [{"text": "individuell plan"}],  # needs the consent to the plan
            "subject": {"reference": f"Patient/{p}"}}
    redacted = accept(database, fast, sender=SENDER, receivers=[TIME], patient_id=p,
                      event="discharge-notice", extra=[plan])
    page = _pull(api, auth(TIME), **{"message.receiver": f"Organization/{TIME}"})
    assert page["entry"] == []  # not published yet
    sweep(database, fast)
    page = _pull(api, auth(TIME), **{"message.receiver": f"Organization/{TIME}"})
    assert _header_ids(page) == [redacted.header_id]
    types = [e["resource"]["resourceType"] for e in page["entry"][0]["resource"]["entry"]]
    assert "CarePlan" not in types
    assert "Encounter" in types
    revoked = accept(database, fast, sender=SENDER, receivers=[TIME], patient_id=p,
                     event="follow-up-contact")
    sweep(database, fast)
    revoke_consent(database, cid, p, TIME)
    page = _pull(api, auth(TIME), **{"message.receiver": f"Organization/{TIME}"})
    assert page["entry"] == []  # neither the new one nor, again, the first
    d = delivery(database, revoked.deliveries[TIME])
    assert (d.status, d.decision) == ("withheld", "deny")
    assert delivery(database, redacted.deliveries[TIME]).status == "delivered"


def _statuses(database: Database) -> dict[int, tuple[str, str | None]]:
    return {d.id: (d.status, d.decision) for d in deliveries(database)}


@pytest.mark.parametrize("ask", [{"_summary": "count"}, {"_count": "0"},
                                 {"_count": "0", "_total": "accurate", "_format": "json"}])
def test_a_count_of_the_pull_hands_out_and_marks_nothing(
        api: TestClient, auth: Auth, database: Database, fast: Settings,
        ask: dict[str, str]) -> None:
    """CONTRACT 2: `_count=0` and `_summary=count` give `total`, no entries, no next link
    (findings B 7); a count is no delivery."""
    add_org(database, SENDER)
    add_org(database, TIME)
    for n in (1, 2, 3):
        accept(database, fast, sender=SENDER, receivers=[TIME], patient_id=add_patient(database, n))
    sweep(database, fast)
    before = _statuses(database)
    assert all(status != "delivered" for status, _ in before.values())
    page = _pull(api, auth(TIME), **{"message.receiver": f"Organization/{TIME}", **ask})
    assert page["total"] == 3
    assert page.get("entry", []) == []
    assert _next(page) is None
    assert _statuses(database) == before
    # control: the pull itself still hands them out and marks them delivered
    page = _pull(api, auth(TIME), **{"message.receiver": f"Organization/{TIME}"})
    assert len(page["entry"]) == 3
    assert "total" not in page
    assert all(d.status == "delivered" for d in deliveries(database))


def test_total_accurate_counts_what_the_pull_would_hand_out(
        api: TestClient, auth: Auth, database: Database, fast: Settings) -> None:
    add_org(database, SENDER)
    add_org(database, TIME)
    p = add_patient(database)
    cid = add_consent(database, p, TIME)
    sent = [accept(database, fast, sender=SENDER, receivers=[TIME], patient_id=p,
                   event="follow-up-contact") for _ in range(3)]
    sweep(database, fast)
    me = auth(TIME)
    page = _pull(api, me, **{"message.receiver": f"Organization/{TIME}", "_count": "2",
                             "_total": "accurate", "_format": "application/fhir+json",
                             "_pretty": "true"})
    assert page["total"] == 3
    assert _header_ids(page) == [s.header_id for s in sent[:2]]
    nxt = _next(page)
    assert nxt is not None
    assert "_total=accurate" in nxt
    assert "_format=" in nxt
    assert [delivery(database, s.deliveries[TIME]).status for s in sent] == [
        "delivered", "delivered", "queued"]
    # what the pull would now withhold is not counted, and a count does not withhold it
    revoke_consent(database, cid, p, TIME)
    count = _pull(api, me, **{"message.receiver": f"Organization/{TIME}", "_summary": "count"})
    assert count["total"] == 0
    assert delivery(database, sent[2].deliveries[TIME]).status == "queued"
    assert _pull(api, me, nxt)["entry"] == []
    assert delivery(database, sent[2].deliveries[TIME]).status == "withheld"


@pytest.mark.parametrize(("params", "status"), [
    ({"_summary": "true"}, 400), ({"_total": "some"}, 400), ({"_elements": "id"}, 400),
    ({"_count": "-1"}, 400), ({"_format": "xml"}, 406)])
def test_the_pull_refuses_what_it_does_not_take(
        api: TestClient, auth: Auth, database: Database, fast: Settings,
        params: dict[str, str], status: int) -> None:
    add_org(database, SENDER)
    add_org(database, TIME)
    accept(database, fast, sender=SENDER, receivers=[TIME], patient_id=add_patient(database))
    sweep(database, fast)
    r = api.get(PULL, params={"message.receiver": f"Organization/{TIME}", **params},
                headers=auth(TIME))
    assert r.status_code == status, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    assert all(d.status != "delivered" for d in deliveries(database))
    # control: the pull as asked rightly hands the message out
    page = _pull(api, auth(TIME), **{"message.receiver": f"Organization/{TIME}",
                                     "_format": "json", "_summary": "false"})
    assert len(page["entry"]) == 1


def _parts(parameters: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for p in parameters["parameter"]:
        assert p["name"] == "destination"
        values = {x["name"]: next(v for k, v in x.items() if k.startswith("value"))
                  for x in p["part"]}
        out[values["receiver"]["reference"]] = values
    return out


def test_delivery_status(api: TestClient, auth: Auth, database: Database, fast: Settings,
                         receiver: ReceiverFactory) -> None:
    t, k = receiver(TIME), receiver(KLEPP)
    k.script.append(Reply(400))
    add_org(database, SENDER)
    add_org(database, TIME, t.url)
    add_org(database, KLEPP, k.url)
    add_org(database, "aasen")
    p = add_patient(database)
    m = accept(database, fast, sender=SENDER, receivers=[TIME, KLEPP, "aasen"], patient_id=p)
    withheld = accept(database, fast, sender=SENDER, receivers=[TIME], patient_id=p,
                      event="follow-up-contact")  # no consent, no legal basis
    url = "/fhir/$delivery-status"
    before = api.get(url, params={"message": m.header_id}, headers=auth(SENDER))
    assert before.status_code == 200, before.text
    assert {r: v["status"] for r, v in _parts(before.json()).items()} == {
        f"Organization/{TIME}": "queued", f"Organization/{KLEPP}": "queued",
        "Organization/aasen": "queued"}
    sweep_until(database, fast, lambda: delivery(database, m.deliveries[TIME]).status
                == "delivered" and delivery(database, m.deliveries[KLEPP]).status
                == "dead-letter")
    after = _parts(api.get(url, params={"message": m.header_id}, headers=auth(SENDER)).json())
    assert after[f"Organization/{TIME}"] == {
        "receiver": {"reference": f"Organization/{TIME}"}, "status": "delivered", "attempts": 1}
    assert after[f"Organization/{KLEPP}"]["status"] == "dead-letter"
    assert after[f"Organization/{KLEPP}"]["attempts"] == 1
    assert after[f"Organization/{KLEPP}"]["last-error"].startswith("HTTP 400")
    assert after["Organization/aasen"]["status"] == "queued"  # pull-only, not pulled yet
    held = _parts(api.get(url, params={"message": withheld.header_id},
                          headers=auth(SENDER)).json())
    assert held[f"Organization/{TIME}"]["status"] == "withheld"
    assert held[f"Organization/{TIME}"]["attempts"] == 0
    # only for the sender's clients
    assert api.get(url, params={"message": m.header_id}, headers=auth(TIME)).status_code == 404
    assert api.get(url, params={"message": "nope"}, headers=auth(SENDER)).status_code == 404
    assert api.get(url, headers=auth(SENDER)).status_code == 400


def test_acknowledgements_are_recorded_against_the_delivery(
        database: Database, fast: Settings) -> None:
    add_org(database, SENDER)
    add_org(database, TIME)
    add_org(database, KLEPP)
    p = add_patient(database)
    ok = accept(database, fast, sender=SENDER, receivers=[TIME, KLEPP], patient_id=p)
    fatal = accept(database, fast, sender=SENDER, receivers=[TIME], patient_id=p)
    sweep(database, fast)
    time_client = Subject("client", "time-ehr", TIME, frozenset({"system/*.*"}))
    with database.session(write=True) as s:
        rows = service.record_ack(s, time_client, response_identifier=ok.header_id, code="ok")
        assert [r.id for r in rows] == [ok.deliveries[TIME]]
        service.record_ack(s, time_client, response_identifier=fatal.header_id,
                           code="fatal-error")
    acked = delivery(database, ok.deliveries[TIME])
    assert (acked.status, acked.ack_code) == ("acknowledged", "ok")
    assert acked.acknowledged_at is not None
    assert acked.delivered_at is not None
    assert delivery(database, ok.deliveries[KLEPP]).status == "queued"  # only the acker's
    failed = delivery(database, fatal.deliveries[TIME])
    assert (failed.status, failed.ack_code) == ("delivered", "fatal-error")
    klepp_client = Subject("client", "klepp-ehr", KLEPP, frozenset({"system/*.*"}))
    with database.session(write=True) as s, pytest.raises(NotFoundError):
        service.record_ack(s, klepp_client, response_identifier=fatal.header_id, code="ok")
    with database.session(write=True) as s, pytest.raises(NotFoundError):
        service.record_ack(s, time_client, response_identifier="unknown", code="ok")
    with database.session(write=True) as s, pytest.raises(InvalidResourceError):
        service.record_ack(s, time_client, response_identifier=ok.header_id, code="fine")


def _coordinator(api: TestClient, database: Database, username: str, org: str) -> TestClient:
    """A browser signed in at /ui as a coordinator of `org` (the session cookie reaches
    /fhir)."""
    with database.session(write=True) as s:
        add_user(s, username=username, password="riktig hest batteri stift",
                 role="coordinator", organization_id=org)
    browser = TestClient(api.app, raise_server_exceptions=False, follow_redirects=False)
    form = browser.get("/ui/sign-in")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token
    signed = browser.post("/ui/sign-in", data={
        "username": username, "password": "riktig hest batteri stift",
        "csrf_token": token.group(1)})
    assert signed.status_code == 303, signed.text
    return browser


def test_replay_by_coordinators_of_sender_or_receiver(
        api: TestClient, auth: Auth, database: Database, fast: Settings,
        receiver: ReceiverFactory) -> None:
    k = receiver(KLEPP)
    k.script.append(Reply(404))
    add_org(database, SENDER)
    add_org(database, KLEPP, k.url)
    add_org(database, "aasen")
    m = accept(database, fast, sender=SENDER, receivers=[KLEPP], patient_id=add_patient(database))
    assert sweep(database, fast).dead_lettered == 1
    d = m.deliveries[KLEPP]
    body = {"resourceType": "Parameters", "parameter": [{"name": "delivery", "valueInteger": d}]}
    fhir_json = {"Content-Type": "application/fhir+json"}
    assert api.post("/fhir/$replay", json=body, headers=auth(SENDER)).status_code == 403
    stranger = _coordinator(api, database, "ola", "aasen")
    assert stranger.post("/fhir/$replay", json=body, headers=fhir_json).status_code == 404
    coordinator = _coordinator(api, database, "kari", KLEPP)
    form = coordinator.post("/fhir/$replay", data={"delivery": str(d)})
    assert form.status_code == 415  # a cross-site form cannot replay
    r = coordinator.post("/fhir/$replay", json=body, headers=fhir_json)
    assert r.status_code == 200, r.text
    part = r.json()["parameter"][0]["part"]
    assert part[0] == {"name": "delivery", "valueInteger": d}
    assert {"name": "status", "valueCode": "queued"} in part
    again = coordinator.post("/fhir/$replay", json=body, headers=fhir_json)
    assert again.status_code == 409  # no longer a dead letter
    sweep_until(database, fast, lambda: delivery(database, d).status == "delivered")
    assert k.accepted_ids() == [m.header_id]
    by_message = {"resourceType": "Parameters",
                  "parameter": [{"name": "message", "valueString": m.header_id}]}
    sender_coordinator = _coordinator(api, database, "per", SENDER)
    nothing = sender_coordinator.post("/fhir/$replay", json=by_message, headers=fhir_json)
    assert nothing.status_code == 409  # nothing dead any more


def test_replay_keeps_other_deliveries_and_times(database: Database, fast: Settings) -> None:
    add_org(database, SENDER)
    add_org(database, TIME)
    m = accept(database, fast, sender=SENDER, receivers=[TIME], patient_id=add_patient(database))
    with database.session(write=True) as s, pytest.raises(NotFoundError):
        service.replay(s, Subject.hub_itself(), delivery_ids=[m.deliveries[TIME] + 1000])
    at = datetime.fromisoformat("2030-01-01T00:00:00+00:00")
    with database.session(write=True) as s:
        row = s.get_one(DeliveryRow, m.deliveries[TIME])
        row.status, row.attempts, row.last_error = "dead-letter", 7, "HTTP 500"
    with database.session(write=True) as s:
        service.replay(s, Subject.hub_itself(), delivery_ids=[m.deliveries[TIME]], now=at)
    d = delivery(database, m.deliveries[TIME])
    assert (d.status, d.attempts, d.last_error, d.next_attempt_at, d.created_at) == (
        "queued", 0, "HTTP 500", at, at)  # the last error stays until the next attempt


def test_a_receiver_reads_a_pulled_message_at_its_full_url(
        api: TestClient, auth: Auth, database: Database, fast: Settings) -> None:
    """The pull's fullUrl names Bundle/<id>: the receiver reads (and vreads, and has the
    history of) exactly what the pull gave it, minimum necessary applied, audited as the pull
    is (findings B 6). Nobody else reads it, and a read hands out and marks nothing."""
    add_org(database, SENDER)
    add_org(database, TIME)
    add_org(database, KLEPP)
    accept(database, fast, sender=SENDER, receivers=[TIME], patient_id=add_patient(database))
    sweep(database, fast)
    me = auth(TIME)
    (pulled,) = _pull(api, me, **{"message.receiver": f"Organization/{TIME}"})["entry"]
    url = pulled["fullUrl"].removeprefix("http://testserver")
    before = mark(database)
    r = api.get(url, headers=me)
    assert r.status_code == 200, r.text
    assert r.json() == pulled["resource"]
    assert r.headers["etag"] == 'W/"1"'
    reads = [x for x in since(database, before) if x.subtype == "read"]
    assert [x.outcome for x in reads] == ["0"]
    assert url.removeprefix("/fhir/") in " ".join(reads[0].entity_refs())
    assert "disclose" in [x.subtype for x in since(database, before)]  # the decision too
    vread = api.get(f"{url}/_history/1", headers=me)
    assert vread.status_code == 200, vread.text
    assert vread.json() == pulled["resource"]
    assert api.get(f"{url}/_history/2", headers=me).status_code == 404
    history = api.get(f"{url}/_history", headers=me)
    assert history.status_code == 200, history.text
    assert [e["resource"] for e in history.json()["entry"]] == [pulled["resource"]]
    # not for another organisation, nor for an id that is no message to the receiver
    assert api.get(url, headers=auth(KLEPP)).status_code == 404
    assert api.get(f"{url}/_history/1", headers=auth(KLEPP)).status_code == 404
    assert api.get("/fhir/Bundle/no-such-message", headers=me).status_code == 404


def test_a_message_not_handed_out_is_not_read(
        api: TestClient, auth: Auth, database: Database, fast: Settings) -> None:
    """Not yet published, or denied now: 404, and the read withholds or delivers nothing.
    Control: once published (and permitted), it reads."""
    add_org(database, SENDER)
    add_org(database, TIME)
    p = add_patient(database)
    cid = add_consent(database, p, TIME)
    sent = accept(database, fast, sender=SENDER, receivers=[TIME], patient_id=p,
                  event="follow-up-contact")
    me = auth(TIME)
    with database.session(write=False) as session:
        bundle_id = session.get_one(MessageRow, delivery(
            database, sent.deliveries[TIME]).message_id).bundle_id
    assert api.get(f"/fhir/Bundle/{bundle_id}", headers=me).status_code == 404
    sweep(database, fast)
    before = delivery(database, sent.deliveries[TIME]).status
    assert before != "delivered"
    assert api.get(f"/fhir/Bundle/{bundle_id}", headers=me).status_code == 200
    assert delivery(database, sent.deliveries[TIME]).status == before
    revoke_consent(database, cid, p, TIME)
    assert api.get(f"/fhir/Bundle/{bundle_id}", headers=me).status_code == 404
    assert delivery(database, sent.deliveries[TIME]).status == before
