"""Benchmark of the resource store against a bare-table floor, on SQLite and PostgreSQL.

    python bench/store.py [--sizes 10000,100000] [--db sqlite,postgresql] [--pg-url URL]
                          [--ops 2000] [--batch 500] [--seed 1] [--profile N]

At each store size (the store is filled up to it in bulk, untimed) and on each database it times
`--ops` operations, each in its own transaction, through the hub's service layer:

- create: bytes -> hub.fhir.jsonio.loads_object -> service.create (validate, index, insert);
- read: service.read of a random stored resource (body decoded);
- search: Patient?identifier=system|value, Task?patient=Patient/x&status=requested and
  Encounter?date=ge2026-01-01&_count=20 in turn, through parse_request and service.search.

The floor does the least the same database can do for the same work, on the same engine: the
same bytes parsed by the stdlib json module and INSERTed into a bare table (id text primary key,
an indexed `ident` text column, body bytes) with one INSERT per transaction; reads SELECT by
primary key and json.loads the body; searches SELECT by the indexed column and json.loads each
body. The report gives ops/s of both and hub/floor (1.0 would be "as fast as the floor").
Hub and floor run over the same items in alternating chunks, so that a change in the load of
the (shared) machine falls on both alike; the per-kind search rows are the search run's calls
of that kind (ops/s from the sum of their latencies). After each fill the planner statistics are
refreshed (ANALYZE; VACUUM ANALYZE on PostgreSQL), as a settled store would have them.

PostgreSQL runs at --pg-url or $HUB_TEST_POSTGRES_URL in a database of its own
(carehub_bench_<random>) that is dropped afterwards; without either it is skipped with a note.
`--profile N` runs cProfile over N more creates at the last size and prints the top costs.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl, urlencode

import sqlalchemy
from benchdb import database_version, machine_info, postgres_url, print_machine, sqlite_url
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Task as ProgressTask
from rich.table import Table
from rich.text import Text
from sqlalchemy import (
    Column,
    Engine,
    Index,
    LargeBinary,
    MetaData,
    String,
    event,
    insert,
    select,
    text,
)

import hub.wiring  # noqa: F401  (the consent gate the store asks, as every hub process has it)
from hub.auth.subject import Subject
from hub.config import Settings
from hub.db.engine import Database
from hub.db.migrate import upgrade
from hub.fhir.identifiers import FNR_SYSTEM, HPR_SYSTEM, make_fodselsnummer
from hub.fhir.jsonio import loads_object
from hub.store import query as search_mod
from hub.store import service

PG_ENV = "HUB_TEST_POSTGRES_URL"
WRITER_ORG = "bench-kommune"  # the organisation the resources are created for (their owner)
T = TypeVar("T")
DbKind = Literal["sqlite", "postgresql"]
Kind = Literal["Patient", "Encounter", "Task"]
# Fill and create mix: one Patient, then two Encounters and two Tasks (mostly for that patient).
MIX: tuple[Kind, ...] = ("Patient", "Encounter", "Task", "Encounter", "Task")

# --- realistic Norwegian resources -------------------------------------------------------------

GIVEN_F = ("Kari", "Ingrid", "Anne", "Solveig", "Marit", "Åse", "Bjørg", "Sigrid", "Nora",
           "Emma", "Ingeborg", "Liv", "Astrid", "Ragnhild", "Tone", "Hege", "Synnøve", "Maja")
GIVEN_M = ("Ola", "Per", "Jan", "Bjørn", "Knut", "Øyvind", "Lars", "Håkon", "Jakob", "Emil",
           "Tor", "Åge", "Arne", "Sverre", "Terje", "Geir", "Nils", "Magnus")
FAMILY = ("Hansen", "Johansen", "Olsen", "Larsen", "Andersen", "Pedersen", "Nilsen",
          "Kristiansen", "Jensen", "Karlsen", "Johnsen", "Pettersen", "Eriksen", "Berg", "Haugen",
          "Hagen", "Johannessen", "Andreassen", "Jacobsen", "Dahl", "Jørgensen", "Halvorsen",
          "Henriksen", "Lund", "Sørensen", "Moen", "Gundersen", "Iversen", "Strand", "Solberg",
          "Svendsen", "Ødegård", "Bråthen", "Løken", "Aas", "Nordmann", "Fjeldstad", "Kvåle")
STREETS = ("Storgata", "Kirkegata", "Skolegata", "Parkveien", "Bjørkeveien", "Granveien",
           "Fjordgata", "Sjøgata", "Øvre Slottsgate", "Løkkeveien", "Kongens gate", "Bekkeliveien")
# (city, postal code, kommune, kommunenummer)
PLACES = (("Oslo", "0150", "Oslo", "0301"), ("Bergen", "5003", "Bergen", "4601"),
          ("Trondheim", "7010", "Trondheim", "5001"), ("Stavanger", "4006", "Stavanger", "1103"),
          ("Bryne", "4340", "Time", "1121"), ("Tromsø", "9008", "Tromsø", "5501"),
          ("Kristiansand", "4610", "Kristiansand", "4204"), ("Drammen", "3015", "Drammen", "3005"),
          ("Bodø", "8006", "Bodø", "1804"), ("Ålesund", "6002", "Ålesund", "1508"),
          ("Lillehammer", "2609", "Lillehammer", "3405"), ("Hamar", "2317", "Hamar", "3403"))
ENCOUNTER_TYPES = (("HJSP", "Hjemmesykepleie"), ("PRAKB", "Praktisk bistand"),
                   ("KORTO", "Korttidsopphold"), ("LEGEV", "Legevakt"),
                   ("FYSIO", "Fysioterapi"), ("DAGSE", "Dagsenter"))
TASK_CODES = (("medisinutdeling", "Medisinutdeling", "Gi morgenmedisin etter multidose."),
              ("sarstell", "Sårstell", "Skift bandasje på leggsår, vurder tegn på infeksjon."),
              ("bt-maling", "Blodtrykksmåling", "Mål blodtrykk og puls, meld avvik til fastlege."),
              ("utskrivning", "Utskrivningsklar", "Pasienten er meldt utskrivningsklar fra "
                                                   "sykehuset; planlegg mottak i kommunen."),
              ("ernaring", "Ernæringskartlegging", "Vei pasienten og fyll ut MUST-skjema."))
REASONS = ("Sårstell etter operasjon", "Oppfølging etter hjerneslag", "KOLS-forverring",
           "Diabetes type 2, insulinregulering", "Fallrisiko, hjemmebesøk", "Demens, tilsyn")
TASK_STATUSES = ("requested", "in-progress", "completed", "cancelled")
TASK_STATUS_WEIGHTS = (4, 2, 3, 1)
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
VOLVEN_ENCOUNTER = "urn:oid:2.16.578.1.12.4.1.1.8432"
TASK_CODE_SYSTEM = "http://carehub.example/fhir/CodeSystem/task-code"


def _tz(day: date) -> str:
    """Norwegian offset, roughly: summer time from April to October."""
    return "+02:00" if 4 <= day.month <= 10 else "+01:00"


def _instant(day: date, hour: int, minute: int) -> str:
    return f"{day.isoformat()}T{hour:02d}:{minute:02d}:00{_tz(day)}"


def _dumps(resource: dict[str, Any]) -> bytes:
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Doc:
    """One resource as a client would send it, plus the floor's key for it."""

    kind: Kind
    raw: bytes
    ident: str


def floor_ident(resource: dict[str, Any]) -> str:
    """The one indexed search key the floor table keeps (what the floor's searches look up)."""
    rtype = resource["resourceType"]
    if rtype == "Patient":
        return f"P|{resource['identifier'][0]['value']}"
    if rtype == "Task":
        return f"T|{resource['for']['reference']}|{resource['status']}"
    return f"E|{resource['period']['start']}"


class NorwegianData:
    """Seeded synthetic Patients (valid fødselsnummer), Encounters and Tasks."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self._fnrs: set[str] = set()

    def _fnr(self, female: bool) -> tuple[str, date]:
        rng = self.rng
        while True:
            born = date(1930, 1, 1) + timedelta(days=rng.randrange(365 * 94))
            low, high = (0, 499) if born.year < 2000 else (500, 999)
            individual = rng.randint(low, high)
            # The ninth digit (the last of the individual number) is even for women.
            if (individual % 2 == 0) != female:
                individual = individual + 1 if individual < high else individual - 1
            try:
                number = make_fodselsnummer(born, individual)
            except ValueError:  # check digit 10: this individual number is not issued
                continue
            if number not in self._fnrs:
                self._fnrs.add(number)
                return number, born

    def patient(self) -> Doc:
        """A Patient with fødselsnummer, name, telecom, address and GP."""
        rng = self.rng
        female = rng.random() < 0.52
        number, born = self._fnr(female)
        given = rng.choice(GIVEN_F if female else GIVEN_M)
        family = rng.choice(FAMILY)
        city, postal, kommune, knr = rng.choice(PLACES)
        gp = rng.randrange(1, 400)
        resource: dict[str, Any] = {
            "resourceType": "Patient",
            "meta": {"profile": ["http://hl7.no/fhir/StructureDefinition/no-basis-Patient"]},
            "identifier": [{"use": "official", "system": FNR_SYSTEM, "value": number}],
            "active": True,
            "name": [{"use": "official", "text": f"{given} {family}", "family": family,
                      "given": [given]}],
            "telecom": [
                {"system": "phone", "value": f"+47 {rng.randrange(40, 99)} {rng.randrange(10, 99)}"
                                             f" {rng.randrange(100, 999)}", "use": "mobile"},
                {"system": "email", "value": f"{given.lower()}.{family.lower()}@example.no"},
            ],
            "gender": "female" if female else "male",
            "birthDate": born.isoformat(),
            "address": [{"use": "home", "type": "physical",
                         "line": [f"{rng.choice(STREETS)} {rng.randrange(1, 120)}"],
                         "city": city, "district": kommune, "postalCode": postal,
                         "country": "NO"}],
            "maritalStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
                "code": rng.choice("MSWDU")}]},
            "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47",
                                                        "code": "nb",
                                                        "display": "Norsk bokmål"}]},
                               "preferred": True}],
            "generalPractitioner": [{"reference": f"Practitioner/fastlege-{gp}",
                                     "identifier": {"system": HPR_SYSTEM,
                                                    "value": str(9_100_000 + gp)},
                                     "display": f"Fastlege {gp}"}],
            "managingOrganization": {"reference": f"Organization/kommune-{knr}",
                                     "display": f"{kommune} kommune"},
        }
        return self._doc("Patient", resource)

    def encounter(self, patient_id: str) -> Doc:
        """A municipal care Encounter of 2025 or the first half of 2026."""
        rng = self.rng
        day = date(2025, 1, 1) + timedelta(days=rng.randrange(545))
        hour, minute = rng.randrange(7, 21), rng.choice((0, 15, 30, 45))
        code, display = rng.choice(ENCOUNTER_TYPES)
        knr = rng.choice(PLACES)[3]
        finished = day < date(2026, 3, 1)
        period = {"start": _instant(day, hour, minute)}
        if finished:
            period["end"] = _instant(day, hour, minute) if minute == 0 else _instant(
                day, hour + 1, minute - 15)
        resource: dict[str, Any] = {
            "resourceType": "Encounter",
            "identifier": [{"system": "urn:oid:2.16.578.1.12.4.1.2.55555",
                            "value": f"enc-{uuid.UUID(int=rng.getrandbits(128)).hex[:12]}"}],
            "status": "finished" if finished else rng.choice(("planned", "in-progress")),
            "class": {"system": ACT_CODE, "code": "HH", "display": "home health"},
            "type": [{"coding": [{"system": VOLVEN_ENCOUNTER, "code": code,
                                  "display": display}]}],
            "subject": {"reference": f"Patient/{patient_id}"},
            "participant": [{"individual": {"reference": f"Practitioner/spl-{rng.randrange(60)}",
                                            "display": "Sykepleier"}}],
            "period": period,
            "reasonCode": [{"text": rng.choice(REASONS)}],
            "serviceProvider": {"reference": f"Organization/kommune-{knr}",
                                "display": "Hjemmetjenesten"},
        }
        return self._doc("Encounter", resource)

    def task(self, patient_id: str) -> Doc:
        """A home-care Task for the patient."""
        rng = self.rng
        status = rng.choices(TASK_STATUSES, TASK_STATUS_WEIGHTS)[0]
        code, display, description = rng.choice(TASK_CODES)
        day = date(2025, 6, 1) + timedelta(days=rng.randrange(390))
        authored = _instant(day, rng.randrange(7, 16), rng.choice((0, 20, 40)))
        resource: dict[str, Any] = {
            "resourceType": "Task",
            "status": status,
            "intent": "order",
            "priority": rng.choice(("routine", "routine", "routine", "urgent")),
            "code": {"coding": [{"system": TASK_CODE_SYSTEM, "code": code, "display": display}],
                     "text": display},
            "description": description,
            "for": {"reference": f"Patient/{patient_id}"},
            "authoredOn": authored,
            "lastModified": authored,
            "requester": {"reference": f"Practitioner/fastlege-{rng.randrange(1, 400)}"},
            "owner": {"reference": f"Organization/kommune-{rng.choice(PLACES)[3]}",
                      "display": "Hjemmetjenesten"},
            "executionPeriod": {"start": _instant(day + timedelta(days=1), 8, 0)},
            "note": [{"text": "Pasienten foretrekker besøk før kl. 10."}],
        }
        return self._doc("Task", resource)

    def make(self, kind: Kind, patient_id: str | None) -> Doc:
        """A resource of `kind` (Encounters and Tasks need a patient id)."""
        if kind == "Patient":
            return self.patient()
        assert patient_id is not None
        return self.encounter(patient_id) if kind == "Encounter" else self.task(patient_id)

    @staticmethod
    def _doc(kind: Kind, resource: dict[str, Any]) -> Doc:
        return Doc(kind, _dumps(resource), floor_ident(resource))


# --- the floor: a bare table on the same engine ------------------------------------------------

FLOOR_META = MetaData()
FLOOR = sqlalchemy.Table(
    "bench_floor", FLOOR_META,
    Column("id", String(64), primary_key=True),
    Column("ident", String(255), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Index("ix_bench_floor_ident", "ident"),
)
_FLOOR_INSERT = insert(FLOOR)
_FLOOR_BY_ID = select(FLOOR.c.body).where(FLOOR.c.id == sqlalchemy.bindparam("id"))
_FLOOR_EQ = select(FLOOR.c.body).where(FLOOR.c.ident == sqlalchemy.bindparam("v")).limit(20)
_FLOOR_RANGE = (select(FLOOR.c.body)
                .where(FLOOR.c.ident >= sqlalchemy.bindparam("lo"),
                       FLOOR.c.ident < sqlalchemy.bindparam("hi"))
                .order_by(FLOOR.c.ident).limit(20))


@dataclass(frozen=True)
class SearchCase:
    """One search, as the hub gets it and as the floor does it."""

    label: str
    resource_type: str
    query: str
    floor_range: bool
    floor_params: dict[str, str]


# --- measuring ---------------------------------------------------------------------------------


@dataclass
class Measurement:
    """Per-call latencies and results (rows found) of timed runs, and their wall time."""

    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    found: list[int] = field(default_factory=list)

    @property
    def ops(self) -> int:
        return len(self.latencies)

    @property
    def per_second(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    @property
    def rows_per_op(self) -> float:
        return sum(self.found) / len(self.found) if self.found else 0.0

    def quantile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0

    def add(self, other: Measurement) -> None:
        self.seconds += other.seconds
        self.latencies.extend(other.latencies)
        self.found.extend(other.found)

    def subset(self, picked: Sequence[int]) -> Measurement:
        """The calls at these positions (wall time: the sum of their latencies)."""
        lat = [self.latencies[i] for i in picked]
        return Measurement(sum(lat), lat, [self.found[i] for i in picked])


def timed(fn: Callable[[T], int], items: Sequence[T]) -> Measurement:
    """Call fn on each item, timing each call and the whole run."""
    latencies: list[float] = []
    found: list[int] = []
    clock = time.perf_counter
    start = clock()
    for item in items:
        t0 = clock()
        n = fn(item)
        latencies.append(clock() - t0)
        found.append(n)
    return Measurement(clock() - start, latencies, found)


def paired(hub: Callable[[T], int], floor: Callable[[T], int], items: Sequence[T],
           chunks: int = 10) -> tuple[Measurement, Measurement]:
    """Time hub and floor over the same items in alternating chunks, so that a change in the
    machine's load (others share it) falls on both alike."""
    step = max(1, -(-len(items) // chunks))
    hub_m, floor_m = Measurement(), Measurement()
    for i in range(0, len(items), step):
        hub_m.add(timed(hub, items[i:i + step]))
        floor_m.add(timed(floor, items[i:i + step]))
    return hub_m, floor_m


@dataclass(frozen=True)
class Row:
    """One line of the report."""

    db: str
    size: int
    op: str
    hub: Measurement
    floor: Measurement

    @property
    def ratio(self) -> float:
        return self.hub.per_second / self.floor.per_second if self.floor.per_second else 0.0


@dataclass
class FillStats:
    """What filling one database took (bulk, untimed in the report's ops/s)."""

    db: str
    size: int
    added: int
    hub_seconds: float
    floor_seconds: float


@dataclass
class BenchStore:
    """A hub database plus the floor table in it, and what the benchmark has stored there."""

    label: str
    db: Database
    data: NorwegianData
    subject: Subject = field(default_factory=Subject.hub_itself)  # reads and searches
    # creates: clinical data is written for an organisation, never by the hub as itself
    # (hub/auth/isolation.py); the organisation owns what it writes
    writer: Subject = field(default_factory=lambda: Subject.working_for(WRITER_ORG, "bench"))
    stored: list[tuple[str, str]] = field(default_factory=list)  # (type, id), filled only
    patients: list[tuple[str, str]] = field(default_factory=list)  # (id, fødselsnummer)
    count: int = 0  # resources in the hub (fill and measured creates)

    def __post_init__(self) -> None:
        upgrade(self.db.engine)
        FLOOR_META.create_all(self.db.engine)
        # The floor writes on SQLite begin IMMEDIATE too, as the hub's write sessions do.
        self.floor_writer = self.db.engine.execution_options(sqlite_begin="IMMEDIATE")

    # fill ----------------------------------------------------------------------------------

    def _patient_for_next(self) -> str | None:
        if not self.patients:
            return None
        if self.rng.random() < 0.8:
            return self.patients[-1][0]
        return self.rng.choice(self.patients)[0]

    @property
    def rng(self) -> random.Random:
        return self.data.rng

    def fill_to(self, size: int, batch: int, progress: Progress) -> FillStats:
        """Create resources through service.create, `batch` per transaction, up to `size`."""
        added = self.count
        task = progress.add_task(f"{self.label}: fill to {size:,}", total=max(0, size - added))
        hub_seconds = floor_seconds = 0.0
        while self.count < size:
            n = min(batch, size - self.count)
            rows: list[dict[str, Any]] = []
            t0 = time.perf_counter()
            with self.db.session(write=True) as session:
                for i in range(n):
                    kind = MIX[(self.count + i) % len(MIX)]
                    doc = self.data.make(kind, self._patient_for_next())
                    res = service.create(session, self.writer, resource=loads_object(doc.raw))
                    rid = res.stored.id
                    if kind == "Patient":
                        self.patients.append((rid, doc.ident.removeprefix("P|")))
                    self.stored.append((kind, rid))
                    rows.append({"id": rid, "ident": doc.ident, "body": doc.raw})
            t1 = time.perf_counter()
            with self.floor_writer.begin() as conn:
                conn.execute(_FLOOR_INSERT, rows)
            floor_seconds += time.perf_counter() - t1
            hub_seconds += t1 - t0
            self.count += n
            progress.advance(task, n)
        progress.remove_task(task)
        self.analyze()
        return FillStats(self.label, size, self.count - added, hub_seconds, floor_seconds)

    def analyze(self) -> None:
        """Fresh planner statistics (and on PostgreSQL a vacuum) after a bulk fill, so that the
        timed runs see a settled store rather than autovacuum catching up in the middle."""
        engine = self.db.engine
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE"))
        else:
            with engine.begin() as conn:
                conn.execute(text("ANALYZE"))

    # workloads -----------------------------------------------------------------------------

    def new_docs(self, n: int) -> list[Doc]:
        """n resources to create in the timed runs (Encounters and Tasks of stored patients)."""
        docs: list[Doc] = []
        for i in range(n):
            kind = MIX[i % len(MIX)]
            pid = None if kind == "Patient" else self.rng.choice(self.patients)[0]
            docs.append(self.data.make(kind, pid))
        return docs

    def search_cases(self, n: int) -> list[SearchCase]:
        """n searches, the three kinds in turn, for random stored patients."""
        cases: list[SearchCase] = []
        for i in range(n):
            pid, fnr = self.rng.choice(self.patients)
            if i % 3 == 0:
                q = urlencode({"identifier": f"{FNR_SYSTEM}|{fnr}"})
                cases.append(SearchCase("Patient?identifier", "Patient", q, False,
                                        {"v": f"P|{fnr}"}))
            elif i % 3 == 1:
                q = urlencode({"patient": f"Patient/{pid}", "status": "requested"})
                cases.append(SearchCase("Task?patient&status", "Task", q, False,
                                        {"v": f"T|Patient/{pid}|requested"}))
            else:
                q = "date=ge2026-01-01&_count=20"
                cases.append(SearchCase("Encounter?date=ge&_count=20", "Encounter", q, True,
                                        {"lo": "E|2026-01-01", "hi": "E}"}))
        return cases

    # hub operations ------------------------------------------------------------------------

    def hub_create(self, doc: Doc) -> int:
        with self.db.session(write=True) as session:
            service.create(session, self.writer, resource=loads_object(doc.raw))
        return 1

    def hub_read(self, key: tuple[str, str]) -> int:
        with self.db.session(write=False) as session:
            stored = service.read(session, self.subject, resource_type=key[0],
                                  resource_id=key[1])
        return 1 if stored.body else 0

    def hub_search(self, case: SearchCase) -> int:
        pairs = parse_qsl(case.query, keep_blank_values=True)
        request = search_mod.parse_request(case.resource_type, pairs, default_count=20,
                                           max_count=500)
        with self.db.session(write=False) as session:
            matches, _, _ = service.search(session, self.subject, request=request)
        return len(matches)

    # floor operations ----------------------------------------------------------------------

    def floor_create(self, doc: Doc) -> int:
        resource = json.loads(doc.raw)
        with self.floor_writer.begin() as conn:
            conn.execute(_FLOOR_INSERT, {"id": str(uuid.uuid4()), "ident": floor_ident(resource),
                                         "body": doc.raw})
        return 1

    def floor_read(self, key: tuple[str, str]) -> int:
        with self.db.engine.begin() as conn:
            body = conn.execute(_FLOOR_BY_ID, {"id": key[1]}).scalar_one()
        return 1 if json.loads(body) else 0

    def floor_search(self, case: SearchCase) -> int:
        with self.db.engine.begin() as conn:
            bodies = conn.execute(_FLOOR_RANGE if case.floor_range else _FLOOR_EQ,
                                  case.floor_params).scalars().all()
        return len([json.loads(b) for b in bodies])

    # one size --------------------------------------------------------------------------------

    def measure(self, size: int, ops: int, console: Console) -> list[Row]:
        """Reads, searches, then creates: hub and floor in alternating chunks, after a warm-up."""
        warm = max(20, min(200, ops // 10))
        keys = [self.rng.choice(self.stored) for _ in range(ops + warm)]
        cases = self.search_cases(ops + warm)
        docs = self.new_docs(ops + warm)
        rows: list[Row] = []

        def run(op: str, hub: Callable[[T], int], floor: Callable[[T], int],
                items: list[T]) -> tuple[Measurement, Measurement]:
            console.print(f"  [dim]{self.label} {size:,}: {op} x{ops}...[/dim]")
            paired(hub, floor, items[:warm], chunks=1)
            h, f = paired(hub, floor, items[warm:])
            rows.append(Row(self.label, size, op, h, f))
            return h, f

        run("read", self.hub_read, self.floor_read, keys)
        hub_s, floor_s = run("search", self.hub_search, self.floor_search, cases)
        timed_cases = cases[warm:]
        for label in dict.fromkeys(c.label for c in cases):  # each kind of search
            picked = [i for i, c in enumerate(timed_cases) if c.label == label]
            rows.append(Row(self.label, size, f"  {label}", hub_s.subset(picked),
                            floor_s.subset(picked)))
        run("create", self.hub_create, self.floor_create, docs)
        self.count += ops + warm
        return rows

    def profile_creates(self, n: int, console: Console) -> None:
        """cProfile n hub creates and print the top costs."""
        docs = self.new_docs(n)
        profiler = cProfile.Profile()
        profiler.enable()
        for doc in docs:
            self.hub_create(doc)
        profiler.disable()
        self.count += n
        for order, limit in (("tottime", 25), ("cumulative", 40)):
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order).print_stats(limit)
            console.rule(f"{self.label}: cProfile of {n} creates, by {order}")
            console.print(out.getvalue(), markup=False, highlight=False)


class RateColumn(ProgressColumn):
    """Resources per second."""

    def render(self, task: ProgressTask) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f}/s" if speed else "-/s", style="cyan")


# --- databases ---------------------------------------------------------------------------------


def set_plan_cache_mode(engine: Engine, mode: str) -> None:
    """psycopg prepares a statement after 5 runs; PostgreSQL may then switch to a generic plan.
    This sets how it chooses, for experiments on the search plans."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        with dbapi_conn.cursor() as cur:
            cur.execute(f"SET plan_cache_mode = {mode}")
        dbapi_conn.commit()


# --- report ------------------------------------------------------------------------------------


def _rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def report(console: Console, rows: list[Row], fills: list[FillStats], versions: dict[str, str],
           info: dict[str, str], wall: float) -> None:
    """Print machine info, the fill summary and the ops table."""
    print_machine(console, info, versions)

    fill = Table(title="Fill (bulk, untimed in the ops table)")
    for name in ("db", "size", "added", "hub s", "hub res/s", "floor s", "floor rows/s"):
        fill.add_column(name, justify="left" if name == "db" else "right")
    for f in fills:
        fill.add_row(f.db, f"{f.size:,}", f"{f.added:,}", f"{f.hub_seconds:.1f}",
                     _rate(f.added / f.hub_seconds if f.hub_seconds else 0),
                     f"{f.floor_seconds:.1f}",
                     _rate(f.added / f.floor_seconds if f.floor_seconds else 0))
    console.print(fill)

    table = Table(title="Store vs floor: one operation per transaction")
    for name in ("db", "size", "op", "hub ops/s", "p50 ms", "p95 ms", "floor ops/s",
                 "floor p50 ms", "hub/floor", "rows/op"):
        table.add_column(name, justify="left" if name in ("db", "op") else "right")
    last: tuple[str, int] | None = None
    for r in rows:
        if last is not None and last != (r.db, r.size):
            table.add_section()
        last = (r.db, r.size)
        per_op = f"{r.hub.rows_per_op:.1f}/{r.floor.rows_per_op:.1f}"
        table.add_row(r.db, f"{r.size:,}", r.op, _rate(r.hub.per_second),
                      f"{r.hub.quantile_ms(0.5):.2f}", f"{r.hub.quantile_ms(0.95):.2f}",
                      _rate(r.floor.per_second), f"{r.floor.quantile_ms(0.5):.2f}",
                      f"{r.ratio:.3f}", per_op)
    console.print(table)
    console.print(f"Total wall time: {wall:.1f} s")


# --- main --------------------------------------------------------------------------------------


def _sizes(value: str) -> list[int]:
    out = []
    for part in value.split(","):
        part = part.strip().lower()
        scale = 1000 if part.endswith("k") else 1
        out.append(int(part.removesuffix("k")) * scale)
    if not out or min(out) < len(MIX):
        raise argparse.ArgumentTypeError(f"sizes must be at least {len(MIX)}")
    return sorted(set(out))


def _dbs(value: str) -> list[DbKind]:
    out: list[DbKind] = []
    for part in value.split(","):
        name = part.strip().lower()
        if name in ("pg", "postgres"):
            name = "postgresql"
        if name == "sqlite":
            out.append("sqlite")
        elif name == "postgresql":
            out.append("postgresql")
        else:
            raise argparse.ArgumentTypeError(f"unknown database {part!r}")
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=_sizes, default=[10_000, 100_000],
                        help="store sizes to measure at, e.g. 10000,100000 or 10k,100k")
    parser.add_argument("--db", type=_dbs, default=["sqlite", "postgresql"],
                        help="sqlite,postgresql")
    parser.add_argument("--pg-url", default=os.environ.get(PG_ENV),
                        help=f"PostgreSQL server URL (default ${PG_ENV})")
    parser.add_argument("--ops", type=int, default=2000, help="timed operations per kind")
    parser.add_argument("--batch", type=int, default=500, help="creates per fill transaction")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pg-plan-cache-mode", choices=("auto", "force_custom_plan",
                                                          "force_generic_plan"),
                        help="SET plan_cache_mode on every PostgreSQL connection (hub and floor)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="cProfile N creates at the last size and print the top costs")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=150)
    started = time.perf_counter()
    info = machine_info()
    if args.pg_plan_cache_mode:
        info["postgresql plan_cache_mode"] = args.pg_plan_cache_mode
    rows: list[Row] = []
    fills: list[FillStats] = []
    versions: dict[str, str] = {}
    for kind in args.db:
        if kind == "postgresql" and not args.pg_url:
            console.print(f"[yellow]PostgreSQL skipped: give --pg-url or set {PG_ENV}.[/yellow]")
            continue
        target = (sqlite_url("carehub-bench-") if kind == "sqlite"
                  else postgres_url(args.pg_url, "carehub_bench_"))
        with target as url:
            db = Database.connect(Settings(), url)
            if kind == "postgresql" and args.pg_plan_cache_mode:
                set_plan_cache_mode(db.engine, args.pg_plan_cache_mode)
            try:
                versions[kind] = database_version(db.engine)
                store = BenchStore(kind, db, NorwegianData(args.seed))
                for size in args.sizes:
                    with Progress(TextColumn("{task.description}"), BarColumn(),
                                  MofNCompleteColumn(), TaskProgressColumn(),
                                  RateColumn(),
                                  TimeElapsedColumn(), TimeRemainingColumn(),
                                  console=console) as progress:
                        fill = store.fill_to(size, args.batch, progress)
                    fills.append(fill)
                    console.print(f"{kind}: filled to {store.count:,} resources "
                                  f"(+{fill.added:,} in {fill.hub_seconds:.0f} s hub, "
                                  f"{fill.floor_seconds:.1f} s floor)")
                    rows.extend(store.measure(size, args.ops, console))
                if args.profile:
                    store.profile_creates(args.profile, console)
            finally:
                db.dispose()
    report(console, rows, fills, versions, info, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
