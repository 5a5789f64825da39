"""The demo's patient administration system: Jæren DPS's PAS sends one stay over MLLP
(ADT^A01 then ADT^A03) to the hub's MLLP listener, as a real PAS would (CONTRACT section 10).

The listener runs in this process on a free loopback port for as long as the stay takes.
Messages are dated from the story's anchor and numbered by it, so a second run of the demo
sends the very same messages and the hub answers them as repeats (the first ACKs again).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from adapters.background import running
from adapters.mllp.simulator import Pas, Stay, ack_code, adt
from adapters.registry import mllp_channel
from hub.audit.recorder import Auditor
from hub.audit.signing import Signer
from hub.config import Settings
from hub.db.engine import Database
from hub.demo.seed import KOMMUNENUMMER, ORGANIZATIONS
from hub.fhir.identifiers import make_fodselsnummer

NAME = ("Hansen", "Per")
FNR = make_fodselsnummer(date(1975, 3, 14), 120)


@dataclass(frozen=True)
class PasStay:
    """What the PAS sent and what the hub answered (MSA-1 per message)."""

    fnr: str
    visit: str
    acks: dict[str, str]


def send_stay(settings: Settings, anchor: datetime) -> PasStay:
    """Admit Per Hansen (Time kommune) six days before `anchor` (the story's first day,
    midnight UTC) and discharge him the day before, so his first follow-up contact is due
    two days after the first run; each message over MLLP, waiting for its ACK."""
    centre = next(o for o in ORGANIZATIONS if o.kind == "mental-health-centre")
    admitted = anchor - timedelta(days=6) + timedelta(hours=10)
    stay = Stay(facility=centre.orgnr, fnr=FNR, visit=f"DEMO-{anchor:%Y%m%d}-1",
                kommunenummer=KOMMUNENUMMER["time-kommune"], admitted=admitted,
                discharged=anchor - timedelta(days=1) + timedelta(hours=14), family=NAME[0],
                given=NAME[1], birth="19750314", sex="M", street="Kvednaberget 7",
                city="Bryne", postal_code="4340")
    database = Database.connect(settings)
    try:
        auditor = Auditor(Signer.from_file(settings.audit_key_file), base_url=settings.fhir_base)
        channel = mllp_channel(database, settings, auditor, host="127.0.0.1", port=0)
        acks: dict[str, str] = {}
        with running(channel), Pas("127.0.0.1", channel.port, attempts=3) as pas:
            for trigger, at in (("A01", stay.admitted),
                                ("A03", stay.discharged or stay.admitted)):
                control = f"{stay.visit}-{trigger}"
                acks[trigger] = ack_code(pas.send(adt(stay, trigger, control, sent=at)))
        return PasStay(FNR, stay.visit, acks)
    finally:
        database.dispose()
