"""The consent gate: the one place asked "may this party see this record" and "may this
message go to this receiver" (CONTRACT sections 3 and 5), answering with a Verdict
(decision, basis, reason).

Reads, vreads, history, searches and `_include`s of the store, routing, the send-time
re-check, pull, `$disclosure-check` and `$consent-trail` all ask it. The rules it holds:

- An organisation sees what it wrote itself and the shared directory (Organization, Endpoint).
- The custodian rule: a Consent opens only the records of the organisation that recorded it
  as custodian (`Consent.organization`, also the Consent's owner: hub/auth/isolation.py).
  Of another organisation's records about a patient, a party sees only what an active
  Consent of that patient, recorded by that organisation, discloses to it
  (hub/consent/policy.py decides: status, period, actors, purpose, class, nested denies).
- The individual plan needs more: a Consent of the patient, recorded by the plan's author,
  that carries category individual-plan and permits the receiver. Missing, the plan is
  withheld with `withheld_for` set, so that recording the consent later releases it.
- A Patient is visible to an organisation that holds records about it: without the person's
  consent, its identity only (HOLDER_ELEMENTS, `view`), and a search finds it only by those
  (HOLDER_SEARCH). A Task is visible to the organisations it names as owner and requester
  (the parties that set its status).
- A Consent is visible to its custodian and to the organisations its permit provisions name,
  never to one it names only to deny.
- Messages: a consent-changed goes where its Consent is visible; a reply goes back to whom it
  answers (legal basis `reply`); a notice about an organisation's own records goes to it
  (basis `own-records`: a meeting's reminder to its organiser); a legal basis permits its
  events' administrative content.
- Every version is judged on its own body (vread, `_history`).
- Token scopes bound what a client gets, `_include`s too.

Every decision about another organisation's patient data is left in
`session.info["disclosures"]`, where the audit trail records it in the same transaction.
The check runs against the consents stored now, so a revocation applies from the moment it
is stored. Two stages keep searches cheap: an SQL pre-filter admits a superset (own records,
the directory, records of patients with a consent naming the organisation, patients it holds
records about); the decision then judges each admitted row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, or_, select
from sqlalchemy.orm import Session

from hub.auth import scopes
from hub.auth.isolation import DIRECTORY_TYPES
from hub.auth.subject import Subject
from hub.consent import minimum
from hub.consent.policy import (
    DEFAULT_LEGAL_BASES,
    OWN_RECORDS,
    PLAN_CONSENT_MISSING,
    DisclosureRequest,
    LegalBasis,
    Verdict,
    consent_message_verdict,
    custodians,
    decide,
)
from hub.db.direct import Direct
from hub.db.types import utcnow
from hub.fhir import refs, vocab
from hub.store import visibility
from hub.store.codec import decode_body
from hub.store.repository import INDEX_TABLES, Current, R
from hub.store.search_params import params_for, parse_reference
from hub.store.types import SERVED

T_REF = INDEX_TABLES[1]
# A patient's current Consents with their owners, built once (asked on every routing decision).
_CONSENTS_OF = Direct(select(R.c.body, R.c.owner_org).where(
    R.c.pk.in_(select(T_REF.c.resource_pk).where(
        T_REF.c.resource_type == "Consent", T_REF.c.param == "patient",
        T_REF.c.target_type == "Patient", T_REF.c.target_id == bindparam("patient_id"))),
    R.c.deleted.is_(False)).order_by(R.c.pk))
# The types with a `patient` search parameter: naming them lets the reference index (which
# leads with the resource type) find a patient's records instead of scanning all references.
_ABOUT_PATIENT_TYPES = sorted(t for t in SERVED if params_for(t).get("patient") is not None)
# Records that make an organisation one that holds records about a patient: its care
# records, not a Consent (recording one opens nothing, CONTRACT section 5).
_HOLDING_TYPES = [t for t in _ABOUT_PATIENT_TYPES if t != "Consent"]
_HOLDS_RECORDS = select(T_REF.c.resource_pk).join(R, R.c.pk == T_REF.c.resource_pk).where(
    T_REF.c.resource_type.in_(_HOLDING_TYPES), T_REF.c.param == "patient",
    T_REF.c.target_type == "Patient", T_REF.c.target_id == bindparam("patient_id"),
    R.c.owner_org == bindparam("org"), R.c.deleted.is_(False)).limit(1)
DISCLOSURES = "disclosures"
REPLY = "reply"
TASK_PARTY = "task-party"
HOLDS_RECORDS = "holds-records"
"""The basis of a read of a Patient by an organisation that holds records about it (CONTRACT
section 3): a permit of its own, neither a consent nor a statutory notice."""
HOLDER_ELEMENTS = frozenset({"identifier", "name", "gender", "birthDate"})
"""What an organisation that holds records about a person, and has no consent of theirs,
sees of their Patient: who the records are about, not where they live or how to reach them
(minimum necessary, CONTRACT section 5). The rest is left out, marked SUBSETTED."""
HOLDER_SEARCH = frozenset({"_id", "_lastUpdated", "_tag", "_profile", "_security", "_source",
                           "identifier", "name", "family", "given", "gender", "birthdate",
                           "_has"})
"""The Patient search parameters on what the holder sees (those elements and meta; `_has`
asks what refers to the Patient, judged on its own): a search by any other (an address, a
phone number, a chain through the Patient) finds a Patient only where consent permits, or
the match would tell what the holder may not see. An `_include` from such a Patient, or a
`_has` from the side of the Patient that refers, follows a reference the holder does not
see: searched as `_include:<param>` (hub/store/search.py, chains.py), none is in it."""
REPLY_TEXT = "an answer goes back to the organisation whose message it answers"
PLAN_WITHOUT_CONSENT = ("The individual plan is shared only where the patient's consent to it "
                        "(a Consent with category individual-plan, recorded by the plan's "
                        "author) permits the receiver; there is none.")


def decision_item(*, recipient: str, patient: str | None, resources: Sequence[str],
                  verdict: Verdict, event: str | None = None) -> dict[str, Any]:
    """One disclosure decision in the shape the audit trail records
    (hub.audit.recorder.Auditor.disclosures)."""
    item = {"recipient": recipient, "patient": patient, "resources": list(resources),
            "decision": verdict.decision, "basis": verdict.basis, "reason": verdict.reason}
    if event is not None:
        item["event"] = event
    return item


def log_decision(session: Session, item: dict[str, Any]) -> None:
    """Leave a decision in the session for the audit record of its transaction."""
    session.info.setdefault(DISCLOSURES, []).append(item)


@dataclass(frozen=True, kw_only=True)
class MessageQuestion:
    """May a message of `event` from `sender_org` about Patient/patient_id, carrying these
    types, go to `receiver_org`?"""

    event: str | None  # None: a question about the Patient alone, as $disclosure-check asks
    sender_org: str | None
    patient_id: str | None
    content_types: frozenset[str]
    receiver_org: str
    consent: Mapping[str, Any] | None = None  # consent-changed: the Consent it carries
    individual_plan: bool = False  # it carries an individual plan (vocab.is_individual_plan)
    replying_to: frozenset[str] = frozenset()  # organisations whose message it answers


def patients_in(body: Mapping[str, Any]) -> set[str]:
    """Ids of the Patients a resource body is about (its `patient` search parameter)."""
    rtype = str(body.get("resourceType"))
    if rtype == "Patient" and isinstance(body.get("id"), str):
        return {str(body["id"])}
    param = params_for(rtype).get("patient")
    if param is None:
        return set()
    try:
        values = param.evaluate(dict(body))
    except Exception:  # noqa: BLE001 - as the index: an unreadable path names no patient
        return set()
    found = (parse_reference(v["reference"]) for v in values
             if isinstance(v, dict) and isinstance(v.get("reference"), str))
    return {f[1] for f in found if f and f[0] == "Patient"}


class Gate:
    """What one subject may see and what may go where, decided against the consents stored
    now. `legal_bases` and `reply_events` are the configured ones (hub.messaging.routing
    reads them from the settings); reads carry no event, so no legal basis opens them."""

    def __init__(self, session: Session, subject: Subject, *, purpose: str | None = None,
                 now: datetime | None = None,
                 legal_bases: Sequence[LegalBasis] = DEFAULT_LEGAL_BASES,
                 reply_events: Iterable[str] = vocab.REPLY_EVENTS) -> None:
        self.session = session
        self.subject = subject
        self.purpose = purpose
        self.now = now or utcnow()
        self.legal_bases = tuple(legal_bases)
        self.reply_events = frozenset(reply_events)
        self._consents: dict[str, list[tuple[dict[str, Any], str | None]]] = {}
        self._holds: dict[tuple[str, str], bool] = {}

    @property
    def recipient(self) -> str | None:
        """The organisation data would be disclosed to."""
        org = self.subject.organization_id
        return f"Organization/{org}" if org else None

    # -- consents ------------------------------------------------------------------------

    def consents_of(self, patient_id: str) -> list[dict[str, Any]]:
        """Current Consents of Patient/patient_id, whoever recorded them (unfiltered)."""
        return [body for body, _ in self._stored_consents(patient_id)]

    def consents_by(self, patient_id: str, custodian: str | None) -> list[dict[str, Any]]:
        """The Consents of Patient/patient_id that Organization/custodian recorded as their
        custodian: the only ones that open that organisation's records."""
        if custodian is None:
            return []
        ref = f"Organization/{custodian}"
        return [body for body, owner in self._stored_consents(patient_id)
                if owner == custodian and ref in custodians(body)]

    def _stored_consents(self, patient_id: str) -> list[tuple[dict[str, Any], str | None]]:
        if patient_id not in self._consents:
            self.session.flush()  # as Session.execute would: what this transaction wrote
            rows = _CONSENTS_OF.rows(self.session.connection(), {"patient_id": patient_id})
            self._consents[patient_id] = [(decode_body(body), owner) for body, owner in rows
                                          if body is not None]
        return self._consents[patient_id]

    # -- messages -------------------------------------------------------------------------

    def message_verdict(self, question: MessageQuestion) -> Verdict:
        """The one routing decision (also the send-time re-check and $disclosure-check)."""
        q = question
        recipient = f"Organization/{q.receiver_org}"
        if q.event == "consent-changed" and q.consent is not None:
            return consent_message_verdict(q.consent, recipient)
        if q.sender_org is not None and q.receiver_org == q.sender_org:
            # A notice about an organisation's own records (its meeting, its Task) told to
            # it discloses nothing: no consent is asked (basis own-records).
            return Verdict("permit", OWN_RECORDS, f"the message is about {recipient}'s own "
                                                  "records: telling it discloses nothing")
        if q.event in self.reply_events and q.receiver_org in q.replying_to:
            return Verdict("permit", REPLY, f"{q.event} answers what {recipient} sent: "
                                            f"{REPLY_TEXT} (legal basis {REPLY})")
        consents = self.consents_by(q.patient_id, q.sender_org) if q.patient_id else []
        request = DisclosureRequest(recipient=recipient, resource_types=q.content_types,
                                    event=q.event, purpose=self.purpose, now=self.now)
        # The patient's consent, where it permits all of it, is the basis: then nothing is
        # trimmed to the administrative content a legal basis alone allows.
        verdict = decide(consents, request, legal_bases=())
        if verdict.decision != "permit":
            verdict = decide(consents, request, legal_bases=self.legal_bases)
        if not q.individual_plan or verdict.decision == "deny" or "CarePlan" in verdict.redact:
            return verdict
        plan = self._plan_verdict(q.patient_id, q.sender_org, recipient)
        if plan.decision != "deny":
            return verdict
        plan_types = frozenset({"CarePlan", "Goal", "CareTeam"}) & q.content_types
        if q.event == "care-plan-shared" or not q.content_types - plan_types - verdict.redact:
            # the plan is what it carries: nothing is left to send without it
            return Verdict("deny", plan.basis, plan.reason, withheld_for=PLAN_CONSENT_MISSING)
        return Verdict("permit-with-redaction", verdict.basis, f"{verdict.reason} {plan.reason}",
                       verdict.redact | plan_types)

    def _plan_verdict(self, patient_id: str | None, author: str | None,
                      recipient: str) -> Verdict:
        """Whether the patient's consent to the individual plan, recorded by its author,
        permits `recipient`."""
        plan_consents = [c for c in (self.consents_by(patient_id, author) if patient_id else [])
                         if vocab.is_plan_consent(c)]
        verdict = decide(plan_consents, DisclosureRequest(
            recipient=recipient, resource_types=frozenset({"CarePlan"}), purpose=self.purpose,
            now=self.now))
        if verdict.decision == "deny":
            return Verdict("deny", verdict.basis, f"{PLAN_WITHOUT_CONSENT} {verdict.reason}.")
        return verdict

    # -- records --------------------------------------------------------------------------

    def clause(self) -> ColumnElement[bool] | None:
        """SQL pre-filter on `resources` (None: no filter). Never admits less than allowed."""
        if self.subject.sees_everything:
            return None
        directory = R.c.resource_type.in_(sorted(DIRECTORY_TYPES))
        org = self.subject.organization_id
        if org is None:
            return directory
        candidates = _patients_consenting_to(org)
        about_candidates = R.c.pk.in_(select(T_REF.c.resource_pk).where(
            T_REF.c.resource_type.in_(_ABOUT_PATIENT_TYPES),
            T_REF.c.param == "patient", T_REF.c.target_type == "Patient",
            T_REF.c.target_id.in_(candidates)))
        named = R.c.pk.in_(select(T_REF.c.resource_pk).where(
            T_REF.c.resource_type == "Consent", T_REF.c.param.in_(("actor", "organization")),
            T_REF.c.target_type == "Organization", T_REF.c.target_id == org))
        held = and_(R.c.resource_type == "Patient", R.c.logical_id.in_(_patients_held_by(org)))
        party = R.c.pk.in_(select(T_REF.c.resource_pk).where(
            T_REF.c.resource_type == "Task", T_REF.c.param.in_(("owner", "requester")),
            T_REF.c.target_type == "Organization", T_REF.c.target_id == org))
        return or_(R.c.owner_org == org, directory,
                   and_(R.c.resource_type == "Patient", R.c.logical_id.in_(candidates)),
                   about_candidates, named, held, party)

    def certain(self) -> ColumnElement[bool] | None:
        """SQL filter on `resources` admitting only what the subject sees whatever a row
        says: its organisation's own records and the directory, of the types its scopes
        allow (None: everything). False, never NULL, for any other row, so it can be negated."""
        if self.subject.sees_everything:
            return None
        org = self.subject.organization_id
        mine: ColumnElement[bool] = R.c.resource_type.in_(sorted(DIRECTORY_TYPES))
        if org is not None:
            mine = or_(mine, and_(R.c.owner_org.is_not(None), R.c.owner_org == org))
        if self.subject.kind != "client":
            return mine
        return and_(mine, R.c.resource_type.in_(sorted(t for t in SERVED if self._scoped(t))))

    def allows(self, rows: Sequence[Current], searched: Iterable[str] = ()) -> list[bool]:
        """For each row, whether the subject may see its current version; logs each
        cross-organisation decision. The patients of the rows are read from the index at
        once (a search page), not from each body. `searched`: the search parameters that
        matched the rows (a Patient seen only as its records' holder matches none but
        HOLDER_SEARCH)."""
        holder = not set(searched) - HOLDER_SEARCH
        if self.subject.sees_everything:
            return [self._scoped(r.resource_type) for r in rows]
        foreign = [r.pk for r in rows if not self._own_or_directory(r)
                   and r.resource_type not in ("Patient", "Consent")]
        patients = self._patients_of(foreign)
        out = []
        for row in rows:
            if row.pk in patients or row.pk in foreign:
                out.append(self._scoped(row.resource_type) and row.body is not None
                           and self.record_verdict(row, decode_body(row.body),
                                                   patients.get(row.pk, set())).decision
                           != "deny")
            else:
                out.append(self.can_see_version(row, None, holder=holder))
        return out

    def _patients_of(self, pks: list[int]) -> dict[int, set[str]]:
        if not pks:
            return {}
        found: dict[int, set[str]] = {}
        for pk, target in self.session.execute(
                select(T_REF.c.resource_pk, T_REF.c.target_id).where(
                    T_REF.c.resource_pk.in_(pks), T_REF.c.param == "patient",
                    T_REF.c.target_type == "Patient")):
            found.setdefault(pk, set()).add(target)
        return found

    def can_see(self, row: Current) -> bool:
        """Whether the subject may see this row's current version."""
        return self.can_see_version(row, None)

    def can_see_version(self, row: Current, body: Mapping[str, Any] | None, *,
                        holder: bool = True) -> bool:
        """Whether the subject may see one version of `row`'s resource: `body`, or the
        current version when None (a resource deleted now shows others nothing). `holder`:
        whether holding records about a Patient counts (not for a search by what the
        holder does not see: HOLDER_SEARCH)."""
        if not self._scoped(row.resource_type):
            return False
        if self.subject.sees_everything or self._own_or_directory(row):
            return True
        if body is None:
            body = decode_body(row.body) if row.body is not None else None
            if body is None:  # deleted now: judged by nothing it says
                return False
        return self.record_verdict(row, body, holder=holder).decision != "deny"

    def view(self, row: Current, body: dict[str, Any] | None) -> dict[str, Any] | None:
        """`body` (a version of `row` the subject may see) as the subject is shown it: a
        Patient it sees only as the holder of records about it, without consent, has its
        identity alone (HOLDER_ELEMENTS); everything else as stored."""
        if (body is None or row.resource_type != "Patient" or self.subject.sees_everything
                or self._own_or_directory(row) or self.recipient is None):
            return body
        if self._consented(row.logical_id, row, self.recipient).decision != "deny":
            return body
        return minimum.trim_resource(body, {"Patient": HOLDER_ELEMENTS})

    def _consented(self, patient_id: str, row: Current, recipient: str) -> Verdict:
        return decide(self.consents_by(patient_id, row.owner_org), DisclosureRequest(
            recipient=recipient, resource_types=frozenset({row.resource_type}),
            purpose=self.purpose, now=self.now))

    def record_verdict(self, row: Current, body: Mapping[str, Any],
                       patients: set[str] | None = None, *, holder: bool = True) -> Verdict:
        """May the subject's organisation see `body`, a version of another organisation's
        resource `row` (about `patients`, read from `body` when not given)? Logged for the
        audit trail."""
        recipient = self.recipient
        ref = f"{row.resource_type}/{row.logical_id}"
        if recipient is None or self.subject.organization_id is None:
            return Verdict("deny", None, "Only an organisation receives patient data.")
        if row.resource_type == "Consent":
            verdict = consent_message_verdict(body, recipient)
            patient = str((body.get("patient") or {}).get("reference", "")) or None
            self._log(recipient, patient, ref, verdict)
            return verdict
        if patients is None:
            patients = patients_in(body)
        if not patients:
            return Verdict("deny", None, f"{ref} is another organisation's and about no "
                                         "patient: not disclosable.")
        verdict = Verdict("permit", None, "")
        for patient_id in sorted(patients):
            verdict = self._record_verdict(patient_id, row, body, recipient, holder=holder)
            self._log(recipient, f"Patient/{patient_id}", ref, verdict)
            if verdict.decision == "deny":
                return verdict
        return verdict

    def _record_verdict(self, patient_id: str, row: Current, body: Mapping[str, Any],
                        recipient: str, *, holder: bool = True) -> Verdict:
        org = self.subject.organization_id
        assert org is not None
        if row.resource_type == "Task" and org in refs.org_ids(
                [body.get("owner"), body.get("requester")]):
            return Verdict("permit", TASK_PARTY, f"{recipient} is named in {row.resource_type}/"
                                                 f"{row.logical_id} as its owner or requester: "
                                                 "a party to the task, which sets its status")
        verdict = self._consented(patient_id, row, recipient)
        if (verdict.decision == "deny" and row.resource_type == "Patient" and holder
                and self._holds_records(org, patient_id)):
            # Its identity only (view): the consent, where there is one, shows it all.
            return Verdict("permit", HOLDS_RECORDS, f"{recipient} holds records about Patient/"
                                                    f"{patient_id}, so it may see who they are "
                                                    "(their identity, nothing more)")
        if verdict.decision != "deny" and vocab.is_individual_plan(body):
            plan = self._plan_verdict(patient_id, row.owner_org, recipient)
            if plan.decision == "deny":
                return plan
        return verdict

    # -- internals ------------------------------------------------------------------------

    def _scoped(self, resource_type: str) -> bool:
        """Token scopes bound what a client sees (people are bound by their role)."""
        return self.subject.kind != "client" or scopes.allows(self.subject.scopes,
                                                              resource_type, "read")

    def _own_or_directory(self, row: Current) -> bool:
        org = self.subject.organization_id
        return row.resource_type in DIRECTORY_TYPES or (org is not None and row.owner_org == org)

    def _holds_records(self, org: str, patient_id: str) -> bool:
        key = (org, patient_id)
        if key not in self._holds:
            found = self.session.execute(_HOLDS_RECORDS, {"patient_id": patient_id,
                                                          "org": org}).first()
            self._holds[key] = found is not None
        return self._holds[key]

    def _log(self, recipient: str, patient: str | None, ref: str, verdict: Verdict) -> None:
        log_decision(self.session, decision_item(recipient=recipient, patient=patient,
                                                 resources=[ref], verdict=verdict))


def _patients_consenting_to(org_id: str) -> Any:
    """Ids of patients with a stored Consent naming Organization/org_id as actor.

    A join from the Consents naming the organisation (the full reference index key) to their
    patient references (by resource): written as `pk IN (naming)` instead, SQLite read every
    Consent's patient reference in the database and filtered those."""
    naming, patient = T_REF.alias("naming"), T_REF.alias("consent_patient")
    return (select(patient.c.target_id)
            .select_from(naming.join(patient, patient.c.resource_pk == naming.c.resource_pk))
            .where(naming.c.resource_type == "Consent", naming.c.param == "actor",
                   naming.c.target_type == "Organization", naming.c.target_id == org_id,
                   patient.c.resource_type == "Consent", patient.c.param == "patient",
                   patient.c.target_type == "Patient"))


def _patients_held_by(org_id: str) -> Any:
    """Ids of patients Organization/org_id holds records about (records it owns)."""
    return (select(T_REF.c.target_id).join(R, R.c.pk == T_REF.c.resource_pk)
            .where(T_REF.c.resource_type.in_(_HOLDING_TYPES), T_REF.c.param == "patient",
                   T_REF.c.target_type == "Patient", R.c.owner_org == org_id))


visibility.use(Gate)  # the store asks this rule (hub/store/visibility.py)
