"""Reliability under chaos (issue #16): load, SIGKILL each role, restart PostgreSQL, a receiver
down for a while; then check that nothing accepted was lost or done twice.

    python bench/chaos.py [--clients 4] [--gap 10] [--pause 3] [--down 8] [--drain 240]
                          [--pg-port 55446] [--port-base 18460] [--keep]

The layout is deploy/up.sh's, without nginx: a throwaway PostgreSQL of its own (scripts/pg.sh,
so it can be stopped with `pg_ctl -m immediate` and started again), `hub db upgrade`, the
story's two organisations registered with `hub org add --endpoint` (their Endpoints are two
receivers in this process: real HTTP servers on loopback that record, in order, every message
they took), a client key per organisation (`hub client keygen`, `hub client add`), and the
roles as separate `hub serve --roles ...` processes: two API processes, a dispatcher, a
scheduler and a sealer.

Load: `--clients` threads, each with its own keep-alive connection, post one patient's story
after another to either API process: a consent (example 01), an admission (03), a meeting
invitation (04), a ready-for-discharge (09) and a discharge (13), all from Jæren DPS to Time
kommune. Each starts a timer that falls due 1-20 s later: the consent's expiry notice and the
meeting's reminder (the consent ends and the meeting starts an hour after that: NOTICE, the
layout's HUB_CONSENT_EXPIRY_NOTICE and HUB_MEETING_REMINDER), the unanswered ready-for-
discharge's notice (dated an hour earlier, less that: HUB_DISCHARGE_READINESS_TIMEOUT) and
the discharge's first follow-up check (dated 72 h less that before now, the hub's default).
Every tenth patient also gets a message the hub must refuse (a Consent whose custodian is
not its sender: 422). A client resends the same bytes (same MessageHeader.id) after a
network error, a 5xx or a 401 (with a new token), to the other API process, until it gets a
final answer; every answer is recorded.

Chaos, one event every `--gap` seconds while the load runs: SIGKILL api-1, the dispatcher,
the scheduler and the sealer in turn (each started again `--pause` s later), Time kommune's
receiver closes its port for `--down` s, PostgreSQL is stopped with `-m immediate` and
started again, Time kommune's receiver answers 503 for `--down` s, and Jæren DPS's receiver
hangs for `--down` s, or until it has held a POST, within HANG_WAIT s more (takes nothing,
answers nothing, holds each connection until the hub gives up after HUB_DELIVERY_TIMEOUT);
the load goes on until those attempts have timed out.
As the hang starts, Time kommune (a client of its own) answers the last meeting invitation
accepted (example 05): a reply, which the hub delivers to the centre, so a delivery to the
hanging receiver falls due whatever notices happen to be due to it then.

Afterwards (waiting at most `--drain` s for the queue, the timers and the sealer), the checks,
from the database and the receivers' records:
- every message answered 200 is stored exactly once (a `messages` row by sender and
  MessageHeader.id, its Bundle, one Patient per person, the discharge's three follow-up
  checks); nothing of a message never answered 200 is stored;
- every delivery (not withheld) was taken by its receiver, and the first arrivals of one
  patient's messages at one receiver are in acceptance order; a message that arrives again
  is counted as a duplicate: allowed only when the dispatcher's kill fell between its two
  arrivals (delivery is at least once there by design: the POST went out, the process died
  before recording it; receivers deduplicate by MessageHeader.id), or when the answer to the
  first copy was lost: the receiver saw the hub hang up before it answered, or the dispatcher
  logged that attempt as unanswered (a read timeout or error, not a connect error) between
  the two copies; "unexplained" otherwise (the PostgreSQL restart included: the dispatcher
  records what the receiver took once the database is back, within the lease of
  HUB_DELIVERY_TIMEOUT x 2 + 1 s). An unexplained one is printed with when each copy came,
  on which connection, what the hub counted and the dispatcher's lines about it;
- every due follow-up check was acted on exactly once: closed, one overdue version of its
  Task, one follow-up-overdue notice to each receiver;
- every accepted consent, meeting invitation and ready-for-discharge has one timer, and each
  due one was acted on exactly once: closed as notified, one notice to each organisation it
  tells (a consent's custodian, the centre; a ready-for-discharge's parties, both; a
  meeting's, both: the organising centre its own meeting, Time kommune by the consent),
  none to anyone else;
- every delivered meeting invitation and ready-for-discharge (their MessageDefinitions require
  an answer; the receivers here never give one) has one acknowledgement timer, due
  HUB_ACK_TIMEOUT (ACK_AFTER) after delivery, and each was acted on exactly once: one
  delivery-unacknowledged notice to the message's sender, whose Communication names the
  delivery, none to anyone else;
- Time kommune's answer was accepted, stored once and taken by the centre after the hang;
- while Jæren DPS's receiver hangs (it held at least one POST), Time kommune's messages
  keep arriving: no gap over HELD_UP s from the hang's start until its held attempts have
  timed out (a slow receiver holds back its own deliveries only);
- `hub audit verify` passes with every record sealed; every role process is alive.
Prints the report; exits 1 on any violation (2 when the layout could not be brought up).
"""

from __future__ import annotations

import argparse
import copy
import http.server
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchdb import fodselsnummers  # noqa: E402

from hub.delivery.scheduled import ACK as ACK_KIND  # noqa: E402
from hub.delivery.scheduled import ACK_SID, answer_required  # noqa: E402
from hub.messaging.outbound import HUB_SENDER  # noqa: E402

EXAMPLES = ROOT.parent / "shared" / "examples"
ORGNR = "urn:oid:2.16.578.1.12.4.1.4.101"
FNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.1"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CENTRE, MUNICIPALITY = "jaeren-dps", "time-kommune"
FIRST_CONTACT = timedelta(hours=72)  # HUB_FOLLOW_UP_FIRST_CONTACT's default
TIMEOUT = 10.0  # HUB_DELIVERY_TIMEOUT's default: how long the hub waits for a receiver
LEASE = 2 * TIMEOUT + 1  # seconds a delivery is leased
HOLD = 30.0  # at most this long a hanging receiver holds a connection
HANG_WAIT = 20.0  # a hang lasts at most this much past `--down` waiting to hold a POST
HANGS = "hangs (takes nothing, answers nothing)"
HELD_UP = 6.0
"""Seconds without an arrival at Time kommune while Jæren DPS's receiver hangs (and its held
attempts wait out TIMEOUT) that count as Time kommune held up by it: its messages arrive
several a second under the load, and a dispatcher whose passes waited for their slowest
attempt went quiet for up to TIMEOUT."""
NOTICE = 3600
ACK_AFTER = 6
"""Seconds of the layout's HUB_ACK_TIMEOUT: a delivered message whose MessageDefinition
requires an answer, unanswered this long, is chased with a notice to its sender."""
"""Seconds of the layout's HUB_CONSENT_EXPIRY_NOTICE, HUB_MEETING_REMINDER and
HUB_DISCHARGE_READINESS_TIMEOUT: a consent's custodian is told this long before it ends, a
meeting's parties this long before it starts, a ready-for-discharge's parties when it has gone
unanswered this long."""


@dataclass(frozen=True)
class NoticeTimer:
    """A timer whose action is one notice: its kind in scheduled_checks, the story message that
    starts it, the notice's event, the type of its target, and the organisations told."""

    name: str
    kind: str
    story_kind: str
    event: str
    target_type: str
    told: frozenset[str]


NOTICE_TIMERS = (
    NoticeTimer("consent expiry", "consent-expiry", "consent", "consent-expiring", "Consent",
                frozenset({CENTRE})),
    # the organising centre is reminded of its own meeting (basis own-records), Time kommune
    # because the story's consent names it (tests/scheduler/test_deadlines.py)
    NoticeTimer("meeting reminder", "meeting-reminder", "meeting", "meeting-reminder",
                "Appointment", frozenset({CENTRE, MUNICIPALITY})),
    NoticeTimer("readiness", "discharge-readiness", "readiness",
                "discharge-readiness-overdue", "Task", frozenset({CENTRE, MUNICIPALITY})),
)


def say(line: str = "") -> None:
    """One line of the report, on stdout."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def instant(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def free_port(start: int, end: int) -> int:
    for port in range(start, end):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise SystemExit(f"no free port in {start}-{end}")


# --- receivers ----------------------------------------------------------------------------------


@dataclass
class Arrival:
    at: float
    header_id: str
    event: str
    resources: tuple[str, ...]  # "Type/id" of every entry
    peer: int = 0  # the sender's port: one connection's requests share it
    accepted: float = 0.0  # when the receiver accepted that connection
    hung_up: bool = False  # the sender had closed the connection before the answer

    def ids(self, resource_type: str) -> tuple[str, ...]:
        """The ids of the entries of `resource_type`."""
        return tuple(r.split("/", 1)[1] for r in self.resources
                     if r.startswith(f"{resource_type}/"))


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A sender killed mid-request (the dispatcher's SIGKILL) is not news."""


class Receiver:
    """An organisation's FHIR endpoint: takes message Bundles by POST and records them in
    order. `down("closed")` closes its port, `down("503")` answers 503 without taking them;
    `up()` brings it back on the same port."""

    def __init__(self, name: str, port: int) -> None:
        self.name, self.port = name, port
        self.arrivals: list[Arrival] = []
        self.refused = 0
        self.held = 0  # POSTs held unanswered while it hung
        self.mode = "up"
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    def _start(self) -> None:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                self.accepted = time.time()
                super().setup()

            def _hung_up(self) -> bool:
                """Whether the sender has closed its end already (its timeout passed): then
                the answer cannot reach it, and the hub will send the message again."""
                try:
                    data: bytes = self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    return False
                except OSError:
                    return True
                return data == b""

            def _hold(self) -> None:
                """Hang as a stuck server does: take nothing, answer nothing, hold the
                connection until the sender gives up and closes it (at most HOLD s)."""
                with receiver._lock:
                    receiver.held += 1
                self.close_connection = True
                self.connection.settimeout(HOLD)
                try:
                    while self.connection.recv(4096):
                        pass
                except OSError:
                    pass

            def do_POST(self) -> None:  # noqa: N802 (the standard library's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if receiver.mode == "hang":
                    self._hold()
                    return
                if receiver.mode == "503":
                    with receiver._lock:
                        receiver.refused += 1
                    self._answer(503, b'{"resourceType": "OperationOutcome"}')
                    return
                bundle = json.loads(body)
                header = bundle["entry"][0]["resource"]
                resources = tuple(f"{e['resource']['resourceType']}/{e['resource'].get('id')}"
                                  for e in bundle["entry"])
                with receiver._lock:
                    receiver.arrivals.append(Arrival(
                        time.time(), str(header["id"]), str(header["eventCoding"]["code"]),
                        resources, self.client_address[1], self.accepted, self._hung_up()))
                self._answer(200, b'{"resourceType": "OperationOutcome"}')

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        server = _Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server

    def down(self, mode: str) -> None:
        if mode == "closed" and self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.mode = mode

    def up(self) -> None:
        if self._server is None:
            for _ in range(100):
                try:
                    self._start()
                    break
                except OSError:
                    time.sleep(0.1)
        self.mode = "up"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


# --- the hub's processes and its database -------------------------------------------------------


class PortTakenError(RuntimeError):
    """scripts/pg.sh found its port taken (exit 75)."""


class Layout:
    """PostgreSQL, the hub's role processes and the admin commands, all under `work`."""

    def __init__(self, work: Path, pg_port: int, env: dict[str, str], *,
                 durable: bool = True) -> None:
        self.work, self.pg_port, self.env, self.durable = work, pg_port, env, durable
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.args: dict[str, list[str]] = {}
        self.exits: list[tuple[float, str, int | None]] = []  # (when, role, exit code)
        self._held: set[str] = set()  # killed on purpose, to be started by the chaos
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, daemon=True)

    @property
    def pg_dir(self) -> Path:
        return self.work / "pg"

    def pg_start(self) -> None:
        """Start PostgreSQL with deploy/postgresql/carehub.conf: fsync and synchronous
        commit on, so a crash keeps every commit the hub answered for."""
        log = (self.work / "log" / "pg.log").open("ab")
        env = {**os.environ, "CAREHUB_PG_CONF": str(ROOT / "deploy" / "postgresql" /
                                                     "carehub.conf") if self.durable else ""}
        rc = subprocess.call(["bash", str(ROOT / "scripts" / "pg.sh"), "start", str(self.pg_dir),
                              str(self.pg_port)], stdout=log, stderr=log, env=env)
        if rc == 75:
            raise PortTakenError(self.pg_port)
        if rc != 0:
            raise RuntimeError(f"PostgreSQL did not start (rc {rc}, {self.work}/log/pg.log)")

    def pg_crash(self) -> None:
        """Stop PostgreSQL as a crash would: no checkpoint, crash recovery on start."""
        data = self.pg_dir / "data"
        pg_ctl = _pg_ctl()
        cmd = [pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"]
        if os.getuid() == 0:
            owner = data.owner()
            if owner != "root":
                cmd = ["runuser", "-u", owner, "--", *cmd]
        subprocess.run(cmd, cwd=self.pg_dir, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    def pg_stop(self) -> None:
        subprocess.call(["bash", str(ROOT / "scripts" / "pg.sh"), "stop", str(self.pg_dir)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def hub(self, *args: str) -> str:
        """Run a `hub` admin command; its stdout."""
        done = subprocess.run([sys.executable, "-m", "hub.cli", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"hub {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def start(self, name: str, *args: str) -> None:
        self.args.setdefault(name, ["serve", *args])
        log = (self.work / "log" / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "hub.cli", *self.args[name]], cwd=ROOT, env=self.env,
            stdout=log, stderr=log, start_new_session=True)

    def kill(self, name: str) -> None:
        with self._lock:
            self._held.add(name)
            proc = self.procs[name]
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def restart(self, name: str) -> None:
        with self._lock:
            self._held.discard(name)
            self.start(name)

    def supervise(self) -> None:
        """From now on start again, 2 s later, any role that exits on its own, as the
        systemd units do (Restart=on-failure, RestartSec=2)."""
        self._supervisor.start()

    def _supervise(self) -> None:
        exited: dict[str, float] = {}
        while not self._stop.wait(0.5):
            with self._lock:
                for name, proc in self.procs.items():
                    if name in self._held or proc.poll() is None:
                        continue
                    if name not in exited:
                        exited[name] = time.time()
                        self.exits.append((exited[name], name, proc.returncode))
                    elif time.time() >= exited[name] + 2:
                        del exited[name]
                        self.start(name)

    def dead(self) -> list[str]:
        return [name for name, p in self.procs.items() if p.poll() is not None]

    def stop_all(self) -> None:
        self._stop.set()
        if self._supervisor.is_alive():
            self._supervisor.join()
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _pg_ctl() -> str:
    found = shutil.which("pg_ctl")
    if found:
        return found
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                  key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    if not bins:
        raise RuntimeError("no pg_ctl")
    return str(bins[-1])


# --- messages -------------------------------------------------------------------------------------


def _example(name: str) -> dict[str, Any]:
    path = next(EXAMPLES.glob(f"{name}-*.json"))
    message: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return message


class Messages:
    """Fresh copies of the story's messages for one person: new MessageHeader.id, new
    identifiers, the person's fødselsnummer."""

    def __init__(self) -> None:
        self.consent = _example("01")
        self.admission = _example("03")
        self.meeting = _example("04")
        self.readiness = _example("09")
        self.discharge = _example("13")
        self.response = _example("05")

    @staticmethod
    def _fresh(template: dict[str, Any], fnr: str) -> dict[str, Any]:
        message = copy.deepcopy(template)
        message["entry"][0]["resource"]["id"] = str(uuid.uuid4())
        for entry in message["entry"][1:]:
            res = entry["resource"]
            if res["resourceType"] == "Patient":
                res["identifier"] = [{"system": FNR_SYSTEM, "value": fnr}]
            for ident in res.get("identifier", []):
                if ident.get("system") == "urn:ietf:rfc:3986":
                    ident["value"] = f"urn:uuid:{uuid.uuid4()}"
        return message

    def story(self, fnr: str, due_in: float,
              notice_in: dict[str, float]) -> list[tuple[str, dict[str, Any]]]:
        """Consent, admission, meeting invitation, ready-for-discharge and discharge of one
        person. The discharge's first follow-up check falls due `due_in` seconds from now; the
        notices of the consent's expiry, the meeting's reminder and the unanswered
        ready-for-discharge `notice_in[story kind]` seconds from now (NOTICE before the
        consent ends and the meeting starts, both after the run). The admission and the
        discharge share the stay's identifier."""
        now = datetime.now(UTC)
        consent = self._fresh(self.consent, fnr)
        consent["entry"][1]["resource"]["provision"]["period"]["end"] = instant(
            now + timedelta(seconds=NOTICE + notice_in["consent"]))
        meeting = self._fresh(self.meeting, fnr)
        start = now + timedelta(seconds=NOTICE + notice_in["meeting"])
        meeting["entry"][1]["resource"].update(start=instant(start),
                                               end=instant(start + timedelta(hours=1)))
        readiness = self._fresh(self.readiness, fnr)
        of = {e["resource"]["resourceType"]: e for e in readiness["entry"]}
        of["Task"]["resource"]["authoredOn"] = instant(
            now - timedelta(seconds=NOTICE - notice_in["readiness"]))
        # the stay of the admission, about the Patient of this message (the example points
        # at the admission example's Patient entry, every person's in this load)
        of["Encounter"]["resource"]["subject"] = {"reference": of["Patient"]["fullUrl"]}
        admission = self._fresh(self.admission, fnr)
        discharge = self._fresh(self.discharge, fnr)
        stay = admission["entry"][1]["resource"]["identifier"][0]["value"]
        of["Encounter"]["resource"]["identifier"][0]["value"] = stay
        discharged = now - FIRST_CONTACT + timedelta(seconds=due_in)
        entries = discharge["entry"]
        entries[1]["resource"]["identifier"][0]["value"] = stay
        entries[1]["resource"]["period"] = {"start": instant(discharged - timedelta(days=12)),
                                            "end": instant(discharged)}
        admission["entry"][1]["resource"]["period"] = {
            "start": instant(discharged - timedelta(days=12))}
        entries[2]["resource"]["activity"][0]["detail"]["scheduledPeriod"]["start"] = instant(
            discharged + timedelta(days=1))
        # no suicide-risk Flag: the 72 h deadline applies
        flag_url = entries[3]["fullUrl"]
        del entries[3]
        header = entries[0]["resource"]
        header["focus"] = [f for f in header["focus"] if f["reference"] != flag_url]
        return [("consent", consent), ("admission", admission), ("meeting", meeting),
                ("readiness", readiness), ("discharge", discharge)]

    def answer(self, fnr: str, appointment: str) -> tuple[str, dict[str, Any]]:
        """Time kommune's answer to the meeting invitation whose Appointment has the
        identifier `appointment`: a reply, so the hub delivers it to the organising centre."""
        message = self._fresh(self.response, fnr)
        message["entry"][1]["resource"]["appointment"]["identifier"]["value"] = appointment
        return ("answer", message)

    def refused(self, fnr: str) -> tuple[str, dict[str, Any]]:
        """A message the hub must refuse as a whole: a Consent its sender is not custodian of."""
        message = self._fresh(self.consent, fnr)
        message["entry"][1]["resource"]["organization"] = [
            {"reference": f"Organization/{MUNICIPALITY}"}]
        return ("refused", message)


# --- load -----------------------------------------------------------------------------------------


@dataclass
class Sent:
    kind: str
    header_id: str
    fnr: str
    marker: str  # a value only this message carries (an identifier of its resources)
    answers: list[str] = field(default_factory=list)  # status codes or error names, in order
    times: list[float] = field(default_factory=list)  # when each answer came
    due_at: float | None = None  # wall time the timer it starts falls due (None: none)

    @property
    def final(self) -> str:
        return self.answers[-1] if self.answers else "none"


class Tokens:
    """Access tokens per organisation, fetched again when refused."""

    def __init__(self, clients: dict[str, dict[str, str]], token_url: str,
                 bases: list[str]) -> None:
        self.clients, self.token_url, self.bases = clients, token_url, bases
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, org: str, *, fresh: bool = False) -> str:
        with self._lock:
            if fresh or org not in self._tokens:
                self._tokens[org] = self._fetch(org)
            return self._tokens[org]

    def _fetch(self, org: str) -> str:
        client = self.clients[org]
        deadline = time.monotonic() + 120
        while True:
            now = int(time.time())
            assertion = jwt.encode(
                {"alg": "ES384", "typ": "JWT", "kid": client["kid"]},
                {"iss": client["client_id"], "sub": client["client_id"], "aud": self.token_url,
                 "iat": now, "exp": now + 120, "jti": str(uuid.uuid4())},
                ECKey.import_key(Path(client["key_file"]).read_bytes()), algorithms=["ES384"])
            base = random.choice(self.bases)
            try:
                r = httpx.post(f"{base}/auth/token", timeout=30, data={
                    "grant_type": "client_credentials", "scope": "system/*.*",
                    "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion})
                if r.status_code == 200:
                    return str(r.json()["access_token"])
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"no token for {org}")
            time.sleep(0.5)


class Load:
    """Client threads posting stories until told to stop."""

    def __init__(self, bases: list[str], tokens: Tokens, clients: int, give_up: float) -> None:
        self.bases, self.tokens, self.give_up = bases, tokens, give_up
        self.sent: list[Sent] = []
        self.answers: list[Sent] = []  # Time kommune's, posted by answer_centre
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._people = iter(fodselsnummers(100000))
        self._messages = Messages()
        self._threads = [threading.Thread(target=self._work, args=(i,), daemon=True)
                         for i in range(clients)]
        self.patients = 0

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def _next_person(self) -> tuple[str, int]:
        with self._lock:
            self.patients += 1
            return next(self._people), self.patients

    def _work(self, i: int) -> None:
        http = [httpx.Client(base_url=b, timeout=30) for b in self.bases]
        turn = i
        while not self._stop.is_set():
            fnr, number = self._next_person()
            due_in = random.uniform(1, 20)
            notice_in = {t.story_kind: random.uniform(1, 20) for t in NOTICE_TIMERS}
            story = self._messages.story(fnr, due_in, notice_in)
            if number % 10 == 0:
                story.insert(1, self._messages.refused(self._stranger()))
            for kind, message in story:
                sent = self._post(http, turn, kind, message, fnr)
                turn += 1
                if kind == "discharge":
                    sent.due_at = time.time() + due_in
                elif kind in notice_in:
                    sent.due_at = time.time() + notice_in[kind]
                if sent.final != "200" and kind != "refused":
                    break  # the rest of this person's story would not make sense
        for c in http:
            c.close()

    def answer_centre(self) -> str:
        """Post, as Time kommune, an answer to the last meeting invitation accepted: a
        message due to Jæren DPS at once. What came back, for the chaos event's note."""
        with self._lock:
            meeting = next((s for s in reversed(self.sent)
                            if s.kind == "meeting" and s.final == "200"), None)
        if meeting is None:
            return "no meeting invitation accepted yet to answer"
        kind, message = self._messages.answer(meeting.fnr, meeting.marker)
        http = [httpx.Client(base_url=b, timeout=30) for b in self.bases]
        try:
            sent = self._post(http, 0, kind, message, meeting.fnr, org=MUNICIPALITY,
                              into=self.answers)
        finally:
            for c in http:
                c.close()
        return f"{MUNICIPALITY} answered a meeting invitation: {sent.answers}"

    def _stranger(self) -> str:
        """A fødselsnummer of nobody in the stories (for a message that must be refused)."""
        with self._lock:
            return next(self._people)

    def _post(self, http: list[httpx.Client], turn: int, kind: str, message: dict[str, Any],
              fnr: str, *, org: str = CENTRE, into: list[Sent] | None = None) -> Sent:
        header = message["entry"][0]["resource"]
        marker = next((ident["value"] for e in message["entry"][1:]
                       for ident in e["resource"].get("identifier", [])
                       if ident.get("system") == "urn:ietf:rfc:3986"), "")
        patient = next(e["resource"] for e in message["entry"]
                       if e["resource"]["resourceType"] == "Patient")
        sent = Sent(kind, str(header["id"]), patient["identifier"][0]["value"], marker)
        with self._lock:
            (self.sent if into is None else into).append(sent)
        body = json.dumps(message).encode()
        deadline = time.monotonic() + self.give_up
        fresh = False
        while True:
            client = http[turn % len(http)]
            turn += 1
            try:
                token = self.tokens.get(org, fresh=fresh)
                fresh = False
                r = client.post("/fhir/$process-message", content=body, headers={
                    "Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"})
                sent.answers.append(str(r.status_code))
                sent.times.append(time.time())
                if r.status_code == 401:
                    fresh = True
                elif r.status_code < 500:
                    return sent
            except (httpx.HTTPError, RuntimeError) as exc:
                sent.answers.append(type(exc).__name__)
                sent.times.append(time.time())
            if time.monotonic() > deadline:
                return sent
            time.sleep(0.3)


# --- chaos ----------------------------------------------------------------------------------------


@dataclass
class Event:
    what: str
    start: float
    end: float = 0.0
    note: str = ""


def chaos(layout: Layout, receivers: dict[str, Receiver], load: Load,
          args: argparse.Namespace, events: list[Event], t0: float) -> None:
    """The schedule: one event every `gap` seconds, each undone before the next. While Jæren
    DPS's receiver hangs, Time kommune answers a meeting invitation, so a delivery to the
    centre falls due then whatever else is due to it."""
    def kill(role: str) -> None:
        e = Event(f"SIGKILL {role}", time.time())
        events.append(e)
        layout.kill(role)
        time.sleep(args.pause)
        layout.restart(role)
        e.end = time.time()

    def receiver_down(org: str, mode: str, meanwhile: Callable[[], str] | None = None) -> None:
        what = {"closed": "port closed", "503": "answers 503", "hang": HANGS}[mode]
        e = Event(f"receiver {org} {what}", time.time())
        events.append(e)
        receivers[org].down(mode)
        if meanwhile is not None:
            e.note = meanwhile()
        if mode == "hang":
            # A hang tests something only once it holds a POST. Under load the answer posted
            # meanwhile can take most of `down` to be accepted, and its delivery falls due
            # after that (a CI run on a busy machine held none in 4 s): hang on until one is
            # held, within HANG_WAIT more seconds.
            give_up = e.start + args.down + HANG_WAIT
            while not receivers[org].held and time.time() < give_up:
                time.sleep(0.1)
        time.sleep(max(0.0, e.start + args.down - time.time()))
        receivers[org].up()
        e.end = time.time()

    def postgres() -> None:
        e = Event("PostgreSQL stop -m immediate, start", time.time())
        events.append(e)
        layout.pg_crash()
        time.sleep(args.pause)
        layout.pg_start()
        e.end = time.time()

    steps: list[Callable[[], None]] = [lambda: kill("api-1"), lambda: kill("dispatcher"),
                                       lambda: receiver_down(MUNICIPALITY, "closed"),
                                       lambda: kill("scheduler"), postgres,
                                       lambda: kill("sealer"),
                                       lambda: receiver_down(MUNICIPALITY, "503"),
                                       lambda: receiver_down(CENTRE, "hang", load.answer_centre)]
    for n, step in enumerate(steps, start=1):
        wait = t0 + n * args.gap - time.time()
        if wait > 0:
            time.sleep(wait)
        step()


# --- checks ---------------------------------------------------------------------------------------


LOST_ANSWER = ("(ReadTimeout)", "ReadError posting", "RemoteProtocolError posting")
"""What the dispatcher's line for a failed attempt says when the request went out whole and
the answer did not come back (not a connect error or timeout, after which the receiver never
had it). The receiver may have taken the message all the same, so the next attempt can bring
it again: at least once by design."""


def _lost_answer(lines: list[str], first: float, again: float) -> bool:
    """Whether the dispatcher gave up on an answer (LOST_ANSWER) for the attempt that brought
    the copy that came at `first`: logged after that attempt can have started (a lease before
    the copy) and before the copy that came `again`."""
    for line in lines:
        if not any(lost in line for lost in LOST_ANSWER):
            continue
        at = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) + int(line[20:23]) / 1000
        if first - LEASE <= at <= again:
            return True
    return False


def _dispatcher_lines(logs: Path) -> dict[int, list[str]]:
    """The dispatcher's log lines about each delivery ("delivery N to ORG: ..."), by id."""
    text = "".join(p.read_text(errors="replace") for p in sorted(logs.glob("dispatcher*")))
    out: dict[int, list[str]] = defaultdict(list)
    for line in text.splitlines():
        _, _, rest = line.partition(": delivery ")
        number = rest.split(" ", 1)[0]
        if rest and number.isdigit():
            out[int(number)].append(line)
    return out


def _repeat(org: str, header_id: str, got: list[Arrival], row: Any, t0: float,
            said: dict[int, list[str]]) -> str:
    """What is known of a message that arrived twice: when each copy came, on which connection
    (accepted when), whether the hub had hung up before the answer, what the hub counted, and
    the dispatcher's log lines about the delivery (its failed attempts)."""
    def rel(at: datetime | None) -> str:
        return f"{at.timestamp() - t0:.1f} s" if at is not None else "?"
    copies = "; ".join(
        f"{a.at - t0:.1f} s on port {a.peer} (accepted {a.accepted - t0:.1f} s"
        f"{', the hub had hung up' if a.hung_up else ''})" for a in got)
    hub = ("the hub has no such delivery" if row is None else
           f"the hub accepted it at {rel(row[10])}, counted {row[7]} attempts, recorded it "
           f"delivered at {rel(row[9])}, last error {(row[8] or 'none')[:120]}")
    lines = "".join(f"\n      {line}" for line in said.get(row[0], [])) if row else ""
    return f"{org}:{header_id} ({got[0].event}; copies: {copies}; {hub}){lines}"


def _rows(engine: Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql), params))


def drained(engine: Engine, load: Load) -> tuple[bool, str]:
    """Whether every delivery is settled, every due check closed and the trail sealed."""
    now = datetime.now(UTC)
    last_due = max((s.due_at for s in load.sent if s.due_at and s.final == "200"), default=0.0)
    queued = _rows(engine, "SELECT count(*) FROM deliveries WHERE status = 'queued' "
                           "AND next_attempt_at IS NOT NULL")[0][0]
    open_due = _rows(engine, "SELECT count(*) FROM scheduled_checks WHERE closed_at IS NULL "
                             "AND due_at <= :now", now=now)[0][0]
    unsealed = _rows(engine, "SELECT count(*) FROM audit_records WHERE leaf_index IS NULL")[0][0]
    # the acknowledgement timers start at delivery, so the last falls due ACK_AFTER after it
    open_acks = _rows(engine, "SELECT count(*) FROM scheduled_checks WHERE closed_at IS NULL "
                              "AND kind = :kind", kind=ACK_KIND)[0][0]
    waiting = time.time() < last_due + 1 or open_acks > 0
    state = (f"{queued} deliveries queued, {open_due} due checks open, "
             f"{unsealed} audit records unsealed{', timers still to fall due' if waiting else ''}")
    return (queued == 0 and open_due == 0 and unsealed == 0 and not waiting), state


@dataclass
class Report:
    lines: list[tuple[str, str]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def add(self, name: str, value: object) -> None:
        self.lines.append((name, str(value)))

    def check(self, name: str, bad: list[str] | int) -> None:
        count = bad if isinstance(bad, int) else len(bad)
        self.lines.append((name, str(count)))
        if count:
            example = "" if isinstance(bad, int) else f": {', '.join(bad[:5])}"
            self.violations.append(f"{name} {count}{example}")


def check(engine: Engine, load: Load, receivers: dict[str, Receiver], events: list[Event],
          settle_at: datetime, report: Report, t0: float, logs: Path) -> None:
    """Everything the issue asks for, from the database and the receivers' records."""
    sent = load.sent
    accepted = [s for s in sent if s.final == "200"]
    never = [s for s in sent if "200" not in s.answers]
    report.add("messages sent", len(sent))
    report.add("requests made", sum(len(s.answers) for s in sent))
    report.add("answers by status", dict(sorted(Counter(a for s in sent for a in s.answers)
                                                .items())))
    report.add("final answers", dict(sorted(Counter(s.final for s in sent).items())))
    report.add("accepted (200)", len(accepted))
    report.add("accepted after resending (a network error or 5xx first)",
               sum(1 for s in accepted if len(s.answers) > 1))
    report.add("accepted after an answer was lost mid-request (read error, reset)",
               sum(1 for s in accepted if {"ReadError", "RemoteProtocolError"} & set(s.answers)))
    report.add("refused on purpose (422 expected)",
               f"{sum(1 for s in sent if s.kind == 'refused')}, "
               f"{sum(1 for s in sent if s.kind == 'refused' and s.final == '422')} answered 422")
    report.check("story messages never answered 200",
                 [f"{s.kind} {s.header_id} {s.answers}" for s in sent
                  if s.kind != "refused" and "200" not in s.answers])
    report.check("refused messages answered 200",
                 [s.header_id for s in sent if s.kind == "refused" and "200" in s.answers])

    # --- stored once ---
    stored = Counter(r[0] for r in _rows(
        engine, "SELECT m.header_id FROM messages m JOIN resources r "
                "ON r.resource_type = 'Bundle' AND r.logical_id = m.bundle_id "
                "WHERE m.sender_org = :org", org=CENTRE))
    report.check("accepted messages not stored (lost)",
                 [f"{s.kind} {s.header_id} answered 200 at {s.times[-1]:.1f}"
                  for s in accepted if stored[s.header_id] == 0])
    report.check("accepted messages stored more than once",
                 [s.header_id for s in accepted if stored[s.header_id] > 1])
    report.check("messages never answered 200 but stored",
                 [s.header_id for s in never if stored[s.header_id]])
    bodies = [bytes(r[0]).decode() for r in _rows(engine, "SELECT body FROM resource_versions "
                                                          "WHERE body IS NOT NULL")]
    everything = "\n".join(bodies)
    report.check("messages never answered 200 with resources stored (partial)",
                 [s.header_id for s in never if (s.marker and s.marker in everything)
                  or (s.kind == "refused" and s.fnr in everything)])
    persons = Counter(r[0] for r in _rows(
        engine, "SELECT r.logical_id FROM resources r WHERE r.resource_type = 'Patient'"))
    report.add("patients (Patient resources)", len(persons))
    patient_fnrs: Counter[str] = Counter()
    for row in _rows(engine, "SELECT body FROM resources WHERE resource_type = 'Patient' "
                             "AND body IS NOT NULL"):
        for ident in json.loads(bytes(row[0])).get("identifier", []):
            if ident.get("system") == FNR_SYSTEM:
                patient_fnrs[ident["value"]] += 1
    report.check("people stored as more than one Patient",
                 [f for f, n in patient_fnrs.items() if n > 1])
    discharges = [s for s in accepted if s.kind == "discharge"]
    checks_per_patient = Counter(r[0] for r in _rows(
        engine, "SELECT patient_ref FROM scheduled_checks WHERE kind = 'follow-up'"))
    wrong = [f"{p} has {n}" for p, n in checks_per_patient.items() if n != 3]
    if len(checks_per_patient) != len(discharges):
        wrong.append(f"{len(checks_per_patient)} patients with checks for "
                     f"{len(discharges)} discharges")
    report.check("accepted discharges without exactly 3 follow-up checks", wrong)

    # --- deliveries ---
    deliveries = _rows(engine, """
        SELECT d.id, d.receiver_org, d.patient_ref, d.status, m.header_id, m.event,
               m.sender_org, d.attempts, d.last_error, d.delivered_at, m.received_at
        FROM deliveries d JOIN messages m ON m.id = d.message_id ORDER BY d.id""")
    report.add("deliveries by status", dict(sorted(Counter(d[3] for d in deliveries).items())))
    routed = {(d[4], d[1]) for d in deliveries if d[3] != "withheld"}
    report.check("accepted messages with no delivery to Time kommune",
                 [s.header_id for s in accepted if (s.header_id, MUNICIPALITY) not in routed])
    report.check("deliveries not delivered (queued, dead-letter)",
                 [f"{d[0]} {d[3]}" for d in deliveries if d[3] in ("queued", "dead-letter")])
    arrived: dict[str, dict[str, list[Arrival]]] = {}
    for org, rec in receivers.items():
        per: dict[str, list[Arrival]] = defaultdict(list)
        for a in rec.arrivals:
            per[a.header_id].append(a)
        arrived[org] = per
    delivered = [d for d in deliveries if d[3] in ("delivered", "acknowledged")]
    report.add("deliveries made (distinct messages received)",
               sum(len(per) for per in arrived.values()))
    report.check("delivered per the hub but never received",
                 [f"{d[0]}" for d in delivered if d[4] not in arrived.get(d[1], {})])
    known = {(d[1], d[4]) for d in deliveries}
    report.check("received but not a delivery of the hub",
                 [h for org, per in arrived.items() for h in per if (org, h) not in known])
    kills = [e for e in events if e.what == "SIGKILL dispatcher"]
    attempts = {(d[1], d[4]): d for d in deliveries}
    said = _dispatcher_lines(logs)
    explained: Counter[str] = Counter()
    unexplained = []
    for org, per in arrived.items():
        for header_id, got in per.items():
            for first, again in zip(got, got[1:], strict=False):
                # in flight at the kill: sent within a lease before it, sent again after it
                cause = next((e.what for e in kills
                              if e.start - LEASE - 1 <= first.at <= e.start + 1
                              and again.at >= e.start), None)
                row = attempts.get((org, header_id))
                if cause:
                    explained[cause] += 1
                elif first.hung_up or (row is not None and _lost_answer(
                        said.get(row[0], []), first.at, again.at)):
                    explained["lost answer"] += 1
                else:
                    unexplained.append(_repeat(org, header_id, got, row, t0, said))
    report.add("duplicates at receivers after the dispatcher's kill (at least once)",
               sum(n for cause, n in explained.items() if cause != "lost answer"))
    report.add("duplicates at receivers after a lost answer (the hub gave up waiting first)",
               explained["lost answer"])
    report.check("duplicates at receivers, unexplained", unexplained)
    order_bad = []
    queues: dict[tuple[str, str], list[str]] = defaultdict(list)
    for d in delivered:
        queues[(d[1], d[2])].append(d[4])
    for (org, patient), expected in queues.items():
        taken = [h for h in expected if h in arrived.get(org, {})]
        if sorted(taken, key=lambda h: arrived[org][h][0].at) != taken:
            order_bad.append(f"{org} {patient}")
    report.check("(receiver, patient) queues out of order", order_bad)
    report.add("receiver refusals (503) while down", sum(r.refused for r in receivers.values()))
    answered = Counter(r[0] for r in _rows(
        engine, "SELECT header_id FROM messages WHERE sender_org = :org", org=MUNICIPALITY))
    report.check(f"answers from {MUNICIPALITY} not accepted, stored once and received",
                 [f"{a.header_id} {a.answers} stored {answered[a.header_id]}"
                  for a in load.answers if a.final != "200" or answered[a.header_id] != 1
                  or a.header_id not in arrived[CENTRE]])
    for e in (e for e in events if e.what.endswith(HANGS)):
        hung = receivers[e.what.split()[1]]
        report.add(f"answers from {MUNICIPALITY} posted while {hung.name} hung",
                   len(load.answers))
        before = [a.at for a in hung.arrivals if e.start - 10 <= a.at < e.start]
        report.add(f"arrivals at {hung.name} in the 10 s before the hang", len(before))
        report.add(f"POSTs held by {hung.name}'s receiver while it hung", hung.held)
        report.check("hangs that held no POST (nothing was sent there while it hung)",
                     [] if hung.held else [e.what])
        # the other receiver's arrivals, from the hang until its held attempts timed out
        end = e.end + TIMEOUT
        edges = [e.start, *sorted(a.at for a in receivers[MUNICIPALITY].arrivals
                                  if e.start <= a.at <= end), end]
        longest = max(b - a for a, b in zip(edges, edges[1:], strict=False))
        report.add(f"longest wait between arrivals at {MUNICIPALITY} meanwhile (s)",
                   f"{longest:.1f}")
        report.check(f"{MUNICIPALITY} held up by the hang (no arrival for over {HELD_UP:g} s)",
                     [f"{longest:.1f} s"] if longest > HELD_UP else [])
    report.add("messages taken after the hub had hung up (slower than its timeout)",
               sum(a.hung_up for r in receivers.values() for a in r.arrivals))

    # --- timers ---
    timers = _rows(engine, """SELECT id, target, due_at, closed_at, outcome, attempts
        FROM scheduled_checks WHERE kind = 'follow-up' AND due_at <= :at""", at=settle_at)
    report.add("timers due", len(timers))
    report.add("timers by outcome", dict(sorted(Counter(str(t[4]) for t in timers).items())))
    report.check("due timers not acted on", [t[1] for t in timers if t[3] is None])
    report.check("due timers closed without acting (no contact was sent)",
                 [f"{t[1]} {t[4]}" for t in timers if t[3] is not None and t[4] != "escalated"])
    overdue_versions: Counter[str] = Counter()
    for row in _rows(engine, """SELECT r.logical_id, v.body FROM resource_versions v
            JOIN resources r ON r.pk = v.resource_pk WHERE r.resource_type = 'Task'"""):
        body = json.loads(bytes(row[1])) if row[1] is not None else {}
        if any(c.get("code") == "overdue"
               for c in (body.get("businessStatus") or {}).get("coding", [])):
            overdue_versions[row[0]] += 1
    notices: dict[str, Counter[str]] = {org: Counter() for org in receivers}
    for org, per in arrived.items():
        for got in per.values():
            if got[0].event == "follow-up-overdue":
                for task in got[0].ids("Task"):
                    notices[org][task] += 1
    escalated = [t for t in timers if t[4] == "escalated"]
    report.add("timers acted on (escalated)", len(escalated))
    twice = []
    for t in escalated:
        task = str(t[1]).split("/", 1)[1]
        if overdue_versions[task] != 1:
            twice.append(f"{t[1]} overdue versions {overdue_versions[task]}")
        for org in receivers:
            if notices[org][task] != 1:
                twice.append(f"{t[1]} notices at {org} {notices[org][task]}")
    report.check("timers not acted on exactly once (overdue versions, notices per receiver)",
                 twice)
    db_notices = Counter(r[0] for r in _rows(
        engine, "SELECT event FROM messages WHERE event = 'follow-up-overdue'"))
    report.check("follow-up-overdue notices stored beyond one per escalated timer",
                 max(0, db_notices["follow-up-overdue"] - len(escalated)))
    for timer in NOTICE_TIMERS:
        _notice_timers(engine, timer, accepted, arrived, settle_at, report)
    _ack_timers(engine, deliveries, arrived, settle_at, report)


def _ack_timers(engine: Engine, deliveries: list[Any],
                arrived: dict[str, dict[str, list[Arrival]]], settle_at: datetime,
                report: Report) -> None:
    """Each delivered message that requires an answer, left unanswered (the receivers here
    never answer), has one acknowledgement timer; each due one told the message's sender
    once (a delivery-unacknowledged notice carrying the Communication that names the
    delivery), and no one else."""
    # (id, receiver, patient, status, header, event, sender, ...) as the caller read them
    chased = {f"Delivery/{d[0]}": d[6] for d in deliveries
              if d[3] == "delivered" and d[6] != HUB_SENDER and answer_required(d[5])}
    per_target = Counter(r[0] for r in _rows(
        engine, "SELECT target FROM scheduled_checks WHERE kind = :kind", kind=ACK_KIND))
    wrong = [f"{t} has {per_target[t]}" for t in chased if per_target[t] != 1]
    wrong += [f"{t}: not a delivery to chase" for t in per_target if t not in chased]
    report.add("acknowledgement timers (deliveries to chase)", len(chased))
    report.check("deliveries to chase without exactly one acknowledgement timer", wrong)
    timers = _rows(engine, """SELECT target, closed_at, outcome FROM scheduled_checks
        WHERE kind = :kind AND due_at <= :at""", kind=ACK_KIND, at=settle_at)
    report.check("acknowledgement timers due but not acted on",
                 [t[0] for t in timers if t[1] is None])
    report.check("acknowledgement timers closed without a notice",
                 [f"{t[0]} {t[2]}" for t in timers if t[1] is not None and t[2] != "notified"])
    # the Communication of each chased delivery (its identifier is the delivery's id)
    naming: dict[str, str] = {}
    for row in _rows(engine, "SELECT logical_id, body FROM resources "
                             "WHERE resource_type = 'Communication' AND body IS NOT NULL"):
        for ident in json.loads(bytes(row[1])).get("identifier", []):
            if ident.get("system") == ACK_SID:
                naming[row[0]] = f"Delivery/{ident['value']}"
    told: dict[str, Counter[str]] = {org: Counter() for org in arrived}
    for org, per in arrived.items():
        for got in per.values():
            if got[0].event == "delivery-unacknowledged":
                told[org].update(naming.get(c, f"Communication/{c}")
                                 for c in got[0].ids("Communication"))
    notified = [t for t in timers if t[2] == "notified"]
    report.add("acknowledgement timers acted on (notice sent)", len(notified))
    wrong = []
    for t in notified:
        for org, count in told.items():
            if count[t[0]] != (1 if org == chased.get(t[0]) else 0):
                wrong.append(f"{t[0]} notices at {org} {count[t[0]]}")
    report.check("acknowledgement timers not acted on exactly once (notices per receiver)",
                 wrong)
    stored = _rows(engine, "SELECT count(*) FROM messages WHERE event = 'delivery-unacknowledged'")
    report.check("delivery-unacknowledged notices stored beyond one per notified timer",
                 max(0, stored[0][0] - len(notified)))


def _notice_timers(engine: Engine, timer: NoticeTimer, accepted: list[Sent],
                   arrived: dict[str, dict[str, list[Arrival]]], settle_at: datetime,
                   report: Report) -> None:
    """Each accepted message that starts `timer` has one; each due one was acted on once:
    closed as notified, one notice at each organisation it tells, none anywhere else."""
    name = timer.name
    started = sum(1 for s in accepted if s.kind == timer.story_kind)
    per_target = Counter(r[0] for r in _rows(
        engine, "SELECT target FROM scheduled_checks WHERE kind = :kind", kind=timer.kind))
    wrong = [f"{c} has {n}" for c, n in per_target.items() if n != 1]
    if len(per_target) != started:
        wrong.append(f"{len(per_target)} targets with a timer for {started} accepted")
    report.check(f"accepted {timer.story_kind} messages without exactly one {name} timer",
                 wrong)
    timers = _rows(engine, """SELECT target, closed_at, outcome FROM scheduled_checks
        WHERE kind = :kind AND due_at <= :at""", kind=timer.kind, at=settle_at)
    report.add(f"{name} timers due", len(timers))
    report.check(f"{name} timers due but not acted on", [t[0] for t in timers if t[1] is None])
    report.check(f"{name} timers closed without a notice",
                 [f"{t[0]} {t[2]}" for t in timers if t[1] is not None and t[2] != "notified"])
    told: dict[str, Counter[str]] = {org: Counter() for org in arrived}
    for org, per in arrived.items():
        for got in per.values():
            if got[0].event == timer.event:
                told[org].update(got[0].ids(timer.target_type))
    notified = [t for t in timers if t[2] == "notified"]
    report.add(f"{name} timers acted on (notice sent)", len(notified))
    wrong = []
    for t in notified:
        target = str(t[0]).split("/", 1)[1]
        for org, count in told.items():
            if count[target] != (1 if org in timer.told else 0):
                wrong.append(f"{t[0]} notices at {org} {count[target]}")
    report.check(f"{name} timers not acted on exactly once (notices per receiver)", wrong)
    stored = _rows(engine, "SELECT count(*) FROM messages WHERE event = :event",
                   event=timer.event)[0][0]
    report.check(f"{timer.event} notices stored beyond one per notified timer",
                 max(0, stored - len(notified)))


def audit_verify(layout: Layout) -> tuple[bool, str]:
    done = subprocess.run([sys.executable, "-m", "hub.cli", "audit", "verify"], cwd=ROOT,
                          env=layout.env, capture_output=True, text=True)
    detail = " ".join((done.stdout + " " + done.stderr).split())
    return done.returncode == 0 and ", 0 waiting for the sealer" in detail, detail


# --- main -----------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("--clients", type=int, default=4, help="client threads posting")
    ap.add_argument("--gap", type=float, default=10, help="seconds between chaos events")
    ap.add_argument("--pause", type=float, default=3, help="seconds a killed role stays down")
    ap.add_argument("--down", type=float, default=8, help="seconds a receiver stays down")
    ap.add_argument("--drain", type=float, default=240,
                    help="seconds to wait, at most, for deliveries, timers and the sealer")
    ap.add_argument("--pg-port", type=int, default=55446)
    ap.add_argument("--port-base", type=int, default=18460,
                    help="first port tried for the API processes and receivers")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    ap.add_argument("--unsafe-pg", action="store_true",
                    help="run PostgreSQL as the test server does (fsync and synchronous "
                         "commit off), to see what the checks catch when a crash loses commits")
    args = ap.parse_args()

    load0 = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="chaos.", dir="/tmp"))
    os.chmod(work, 0o711)  # the postgres user passes through to its own data dir
    (work / "log").mkdir()
    (work / "keys").mkdir(mode=0o700)
    ports = iter(range(args.port_base, args.port_base + 40))

    def port() -> int:
        return free_port(next(ports), args.port_base + 40)

    api_ports = [port(), port()]
    pg_port = free_port(args.pg_port, args.pg_port + 10)
    base = f"http://127.0.0.1:{api_ports[0]}"
    url = f"postgresql+psycopg://carehub@127.0.0.1:{pg_port}/carehub_test"
    env = {**os.environ, "HUB_DATABASE_URL": url, "HUB_BASE_URL": base,
           "HUB_AUDIT_KEY_FILE": str(work / "keys" / "audit-key.pem"),
           "HUB_DISPATCHER": "false", "HUB_SCHEDULER": "false", "HUB_SEALER": "false",
           "HUB_SEAL_INTERVAL": "0.5", "HUB_SCHEDULER_INTERVAL": "2",
           "HUB_DELIVERY_FIRST_RETRY": "1", "HUB_CONSENT_EXPIRY_NOTICE": str(NOTICE),
           "HUB_MEETING_REMINDER": str(NOTICE), "HUB_DISCHARGE_READINESS_TIMEOUT": str(NOTICE),
           "HUB_ACK_TIMEOUT": str(ACK_AFTER), "HUB_DELIVERY_POLL_INTERVAL": "0.5",
           "HUB_DB_POOL_SIZE": "5", "HUB_TIMEZONE": "Europe/Oslo"}
    env.pop("HUB_WORKERS", None)
    layout = Layout(work, pg_port, env, durable=not args.unsafe_pg)
    receivers: dict[str, Receiver] = {}
    say(f"chaos: {os.cpu_count()} cores, load {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}; "
        f"work dir {work}; {args.clients} clients, gap {args.gap:g} s, pause {args.pause:g} s, "
        f"receiver down {args.down:g} s; PostgreSQL "
        f"{'fsync and synchronous commit OFF' if args.unsafe_pg else 'deploy settings'}")
    try:
        try:
            for _ in range(10):  # another server may take a port between look and bind
                try:
                    layout.pg_start()
                    break
                except PortTakenError:
                    layout.pg_port = free_port(layout.pg_port + 1, args.pg_port + 50)
            else:
                raise RuntimeError("no port for PostgreSQL")
            url = f"postgresql+psycopg://carehub@127.0.0.1:{layout.pg_port}/carehub_test"
            env["HUB_DATABASE_URL"] = url
            layout.hub("db", "upgrade")
            for org in (CENTRE, MUNICIPALITY):
                receivers[org] = Receiver(org, port())
            layout.hub("org", "add", "--id", CENTRE, "--name", "Jæren DPS", "--kind",
                       "mental-health-centre", "--identifier", f"{ORGNR}|983974791",
                       "--endpoint", receivers[CENTRE].url)
            layout.hub("org", "add", "--id", MUNICIPALITY, "--name", "Time kommune", "--kind",
                       "municipality", "--identifier", f"{ORGNR}|964969590",
                       "--endpoint", receivers[MUNICIPALITY].url)
            clients = {}
            for org in (CENTRE, MUNICIPALITY):
                key, jwks = work / "keys" / f"{org}.key.pem", work / "keys" / f"{org}.jwks.json"
                layout.hub("client", "keygen", "--key", str(key), "--jwks", str(jwks),
                           "--kid", f"{org}-chaos")
                client_id = layout.hub("client", "add", "--org", org, "--jwks", str(jwks),
                                       "--name", f"{org} chaos").strip().splitlines()[-1]
                clients[org] = {"client_id": client_id, "kid": f"{org}-chaos",
                                "key_file": str(key)}
            for n, p in enumerate(api_ports, start=1):
                layout.start(f"api-{n}", "--roles", "api", "--host", "127.0.0.1",
                             "--port", str(p))
            for role in ("dispatcher", "scheduler", "sealer"):
                layout.start(role, "--roles", role)
            bases = [f"http://127.0.0.1:{p}" for p in api_ports]
            for b in bases:
                deadline = time.monotonic() + 120
                while True:
                    try:
                        if httpx.get(f"{b}/fhir/metadata", timeout=5).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline or layout.dead():
                        raise RuntimeError(f"API {b} did not start ({work}/log)")
                    time.sleep(0.3)
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            say(f"chaos: the layout did not come up: {exc}")
            return 2

        tokens = Tokens(clients, f"{base}/auth/token", bases)
        give_up = max(60.0, 6 * args.gap)
        load = Load(bases, tokens, args.clients, give_up)
        events: list[Event] = []
        layout.supervise()
        t0 = time.time()
        load.start()
        chaos_thread = threading.Thread(target=chaos, args=(layout, receivers, load, args,
                                                                  events, t0))
        chaos_thread.start()
        chaos_thread.join()
        # load after the last event too, until the attempts the hang held have timed out
        time.sleep(max(args.gap, TIMEOUT + 2))
        load.stop()
        t_load = time.time()
        engine = create_engine(url, pool_pre_ping=True)
        deadline = time.monotonic() + args.drain
        ok, state = drained(engine, load)
        while not ok and time.monotonic() < deadline:
            time.sleep(1)
            ok, state = drained(engine, load)
        t_drain = time.time()
        settle_at = datetime.now(UTC)
        verified, detail = audit_verify(layout)
        dead = layout.dead()

        report = Report()
        report.add("load (s)", f"{t_load - t0:.0f}")
        report.add("drain (s)", f"{t_drain - t_load:.0f} ({'settled' if ok else 'NOT settled'}:"
                                f" {state})")
        report.add("patients", load.patients)
        check(engine, load, receivers, events, settle_at, report, t0, work / "log")
        report.check("drain bound reached before settling", 0 if ok else 1)
        report.add("hub audit verify", detail)
        report.check("audit verify failures", 0 if verified else 1)
        report.add("role exits on their own, started again 2 s later (as systemd does)",
                   ", ".join(f"{name} rc {rc} at {at - t0:.1f} s" for at, name, rc
                             in layout.exits) or "none")
        report.check("role processes dead at the end", dead)
        engine.dispose()
        load1 = os.getloadavg()

        say("")
        say("chaos events (seconds from the start of the load):")
        for e in events:
            say(f"  {e.start - t0:6.1f} - {e.end - t0:6.1f}  {e.what}")
            if e.note:
                say(f"{'':20}{e.note}")
        say("")
        width = max(len(n) for n, _ in report.lines)
        for name, value in report.lines:
            say(f"{name:<{width}}  {value}")
        say("")
        say(f"load average at the end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} "
            f"({os.cpu_count()} cores)")
        if report.violations:
            say(f"VIOLATIONS: {len(report.violations)}")
            for v in report.violations:
                say(f"  {v}")
            return 1
        say("violations: 0")
        return 0
    finally:
        layout.stop_all()
        for r in receivers.values():
            r.stop()
        layout.pg_stop()
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
