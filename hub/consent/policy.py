"""Who may receive what about a patient: the patient's Consents and legal bases in, a Verdict out.

Pure (no database, no I/O, no clock: `now` comes with the request). CONTRACT section 5 in code:

- Default deny. A Consent counts when it is a Consent with an id, status active, scope
  patient-privacy and `now` inside `provision.period` (see hub/consent/periods.py).
- A root provision of type permit grants to organisations named in `provision.actor` with role
  v3-ParticipationType|IRCP, narrowed by `purpose` (v3-ActReason codes) and `class`
  (http://hl7.org/fhir/resource-types codes); requested types outside the class are redacted.
  No actor grants nobody; a root provision without a type grants nothing and denies nothing.
- Nested provisions of type deny (or without a type: an exception to a permit) cut out what they
  match: actor (any role; none = everybody), purpose, period, class (none = everything). Nested
  permits, and anything nested deeper than one level, are not read. Actors are matched by
  `reference.reference` ("Organization/<id>", or an absolute URL ending so), not by identifier.
- A root provision of type deny is an opt-out, matched like a nested deny (actor of any role,
  none = everybody; purpose; class, none = everything). The newest granting consent wins
  unless an opt-out is newer still ("newer": `dateTime`, then `meta.lastUpdated`, then list
  position). An opt-out later revoked (status inactive) still outranks the older permits:
  revoking an opt-out does not bring them back; the patient gives a new consent. So a
  revocation can never open a disclosure.
- When in doubt, withhold: a permit that narrows by something not read here (`action` without
  consentaction|disclose, `securityLabel`, `code`, `data`, `dataPeriod`) or has an unreadable
  period grants nothing; a deny with an unreadable period or unread elements applies as if they
  were absent (wider).
- A legal basis permits its events' administrative content whatever the consents say; other
  content of such an event goes only where a consent permits it, and is otherwise redacted.

The caller chooses the consents (those of the patient the data is about).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from hub.consent.periods import check_period, instant
from hub.fhir import refs
from hub.fhir.datetimes import EARLIEST

Decision = Literal["permit", "deny", "permit-with-redaction"]

CONSENT_SCOPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentscope"
PARTICIPATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ACT_REASON_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
RESOURCE_TYPES_SYSTEM = "http://hl7.org/fhir/resource-types"
CONSENT_ACTION_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentaction"
RECIPIENT_ROLE = "IRCP"
TREATMENT = "TREAT"

ADMINISTRATIVE_TYPES = frozenset(
    {"MessageHeader", "Patient", "Encounter", "Task", "Organization", "Location"}
)
_UNREAD_NARROWING = ("securityLabel", "code", "data", "dataPeriod")

_PURPOSE_WORDS = {
    "TREAT": "treatment",
    "ETREAT": "emergency treatment",
    "CAREMGT": "care management",
    "COC": "continuity of care",
    "HOPERAT": "healthcare operations",
    "HPAYMT": "payment",
    "HRESCH": "research",
    "CLINTRCH": "clinical trial research",
    "PUBHLTH": "public health",
    "HMARKT": "marketing",
    "HLEGAL": "legal purposes",
    "PATRQT": "the patient's request",
}
_STATUS_WORDS = {
    "inactive": "was revoked (status inactive)",
    "draft": "is only a draft (status draft)",
    "proposed": "is proposed but not agreed (status proposed)",
    "rejected": "was rejected (status rejected)",
    "entered-in-error": "was entered in error (status entered-in-error)",
}


@dataclass(frozen=True, kw_only=True)
class DisclosureRequest:
    """A question: may `recipient` receive data of these types, for this purpose and event, now."""

    recipient: str
    resource_types: frozenset[str]
    purpose: str | None = None  # a v3-ActReason code; None is treatment (TREAT)
    event: str | None = None
    now: datetime

    def __post_init__(self) -> None:
        """Refuse a naive `now` (raises ValueError): consent periods are compared in UTC."""
        if self.now.tzinfo is None or self.now.utcoffset() is None:
            raise ValueError("DisclosureRequest.now must be timezone-aware")


@dataclass(frozen=True)
class LegalBasis:
    """A statutory basis: these events may carry these resource types without consent."""

    code: str
    events: frozenset[str]
    resource_types: frozenset[str]
    text: str


STATUTORY_NOTIFICATION = LegalBasis(
    code="statutory-notification",
    events=frozenset({"admission-notice", "ready-for-discharge", "ready-for-discharge-withdrawn"}),
    resource_types=ADMINISTRATIVE_TYPES,
    # The forskrift's notices (of admission, of readiness for discharge) are what the municipality
    # needs to plan services and what its payment duty runs from; only administrative content.
    text=(
        "statutory notice of admission and discharge readiness to the municipality "
        "(helse- og omsorgstjenesteloven § 11-4 and forskrift om kommunal betaling for "
        "utskrivningsklare pasienter, with the cooperation duty of spesialisthelsetjenesteloven)"
    ),
)
DEFAULT_LEGAL_BASES: tuple[LegalBasis, ...] = (STATUTORY_NOTIFICATION,)


OWN_RECORDS = "own-records"
"""The basis of a message about an organisation's own records told to that organisation
(hub.consent.gate): nothing is disclosed, so no consent is asked and nothing trimmed."""


@dataclass(frozen=True)
class Verdict:
    """The answer: decision, what it rests on (Consent/<id> or a legal-basis code), and why."""

    decision: Decision
    basis: str | None
    reason: str
    redact: frozenset[str] = field(default_factory=frozenset)
    withheld_for: str | None = None  # a deny that a later consent releases: what it waits for


PLAN_CONSENT_MISSING = "individual-plan-consent"
"""Verdict.withheld_for of an individual plan withheld for lack of the patient's consent."""


@dataclass(frozen=True)
class _Finding:
    """What one consent says about the request."""

    ref: str
    order: tuple[datetime, datetime, int]
    effect: Literal["grant", "deny", "none"]
    allowed: frozenset[str] = frozenset()  # grant: requested types it permits
    withheld: tuple[tuple[str, str], ...] = ()  # grant: (type, why) for requested types it keeps
    removes: frozenset[str] | None = None  # deny: types it withholds; None = everything
    revoked: bool = False  # deny: a revoked opt-out
    note: str | None = None  # none: why it does not grant, when the consent is about the recipient


# --- reading FHIR JSON -------------------------------------------------------------------------


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _items(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _codings(value: object) -> list[Mapping[str, Any]]:
    """The Codings of a Coding list or a CodeableConcept."""
    if isinstance(value, Mapping):
        return [c for c in _items(value.get("coding")) if isinstance(c, Mapping)]
    return [c for c in _items(value) if isinstance(c, Mapping)]


def _codes(value: object, system: str) -> frozenset[str]:
    """The codes of `value`'s Codings in `system`."""
    return frozenset(
        c["code"] for c in _codings(value)
        if c.get("system") == system and isinstance(c.get("code"), str)
    )


def _purpose_codes(value: object) -> frozenset[str]:
    """Purpose codes: v3-ActReason Codings, or Codings that leave the system out."""
    return frozenset(
        c["code"] for c in _codings(value)
        if c.get("system") in (ACT_REASON_SYSTEM, None) and isinstance(c.get("code"), str)
    )


def organization_ref(reference: object) -> str | None:
    """'Organization/<id>' for a relative or absolute Organization reference, else None."""
    return refs.org_ref(reference)


def _actor_refs(actors: object, *, role: str | None = None) -> set[str]:
    """The Organizations among `actors`, only those with `role` when given."""
    refs: set[str] = set()
    for actor in _items(actors):
        actor = _mapping(actor)
        if role is not None and role not in _codes(actor.get("role"), PARTICIPATION_SYSTEM):
            continue
        org = organization_ref(_mapping(actor.get("reference")).get("reference"))
        if org:
            refs.add(org)
    return refs


def _consent_ref(consent: Mapping[str, Any]) -> str | None:
    rid = consent.get("id")
    return f"Consent/{rid}" if isinstance(rid, str) and rid else None


def _purpose_words(code: str) -> str:
    return _PURPOSE_WORDS.get(code, f"purpose {code}")


def _listing(words: Iterable[str]) -> str:
    """'A, B and C', sorted; 'nothing' when empty."""
    items = sorted(words)
    if len(items) < 2:
        return items[0] if items else "nothing"
    return ", ".join(items[:-1]) + " and " + items[-1]


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


# --- one consent ---------------------------------------------------------------------------------


def _order(consent: Mapping[str, Any], index: int) -> tuple[datetime, datetime, int]:
    """Recency: dateTime, then meta.lastUpdated, then position in the list."""
    given = instant(consent.get("dateTime")) or EARLIEST
    updated = instant(_mapping(consent.get("meta")).get("lastUpdated")) or EARLIEST
    return given, updated, index


def _period_note(ref: str, period: Mapping[str, Any], check: str) -> str:
    if check == "before":
        return f"{ref} is not in force until {period.get('start')}"
    if check == "after":
        end = str(period.get("end"))
        return f"{ref} expired {'at' if 'T' in end else 'on'} {end}"
    return f"{ref} has a period the hub cannot read"


def _evaluate(
    consent: Mapping[str, Any], index: int, request: DisclosureRequest, purpose: str
) -> _Finding:
    """What `consent` says about the request."""
    ref = _consent_ref(consent) or f"Consent at position {index + 1}"
    order = _order(consent, index)
    if consent.get("resourceType") != "Consent" or not _consent_ref(consent):
        return _Finding(ref, order, "none")
    provision = _mapping(consent.get("provision"))
    kind = provision.get("type")
    recipient = organization_ref(request.recipient)
    named = recipient in _actor_refs(provision.get("actor"))
    status = consent.get("status")
    revoked_opt_out = kind == "deny" and status == "inactive"

    def none(note: str | None) -> _Finding:
        return _Finding(ref, order, "none", note=note if named else None)

    if status != "active" and not revoked_opt_out:
        return none(f"{ref} {_STATUS_WORDS.get(str(status), f'is not active (status {status})')}")
    if "patient-privacy" not in _codes(consent.get("scope"), CONSENT_SCOPE_SYSTEM):
        return none(f"{ref} is not a privacy consent (scope patient-privacy)")
    check = check_period(provision.get("period"), request.now)
    if check in ("before", "after") or (check == "unreadable" and kind != "deny"):
        return none(_period_note(ref, _mapping(provision.get("period")), check))
    if kind == "deny":
        return _opt_out(ref, order, provision, request, purpose, revoked=revoked_opt_out)
    if kind != "permit":
        return none(f"{ref} does not say whether it permits or denies, so it grants nothing")
    return _permit(ref, order, provision, request, purpose)


def _opt_out(
    ref: str, order: tuple[datetime, datetime, int], provision: Mapping[str, Any],
    request: DisclosureRequest, purpose: str, *, revoked: bool,
) -> _Finding:
    """A root deny: withholds from the recipients it names (or everybody) what its class lists."""
    if not _applies(provision, request, purpose):
        return _Finding(ref, order, "none")
    return _Finding(ref, order, "deny", removes=_removed(provision), revoked=revoked)


def _applies(provision: Mapping[str, Any], request: DisclosureRequest, purpose: str) -> bool:
    """Whether a deny provision's actor, purpose and period conditions hold for the request."""
    actors = _items(provision.get("actor"))
    if actors and organization_ref(request.recipient) not in _actor_refs(actors):
        return False
    purposes = _purpose_codes(provision.get("purpose"))
    if _items(provision.get("purpose")) and purpose not in purposes:
        return False
    return check_period(provision.get("period"), request.now) in ("in", "unreadable")


def _removed(provision: Mapping[str, Any]) -> frozenset[str] | None:
    """The resource types a deny withholds; None (everything) without a class it can read."""
    if not _items(provision.get("class")):
        return None
    return _codes(provision.get("class"), RESOURCE_TYPES_SYSTEM) or None


def _permit(
    ref: str, order: tuple[datetime, datetime, int], provision: Mapping[str, Any],
    request: DisclosureRequest, purpose: str,
) -> _Finding:
    """A root permit: what it grants the recipient, or why it grants nothing."""
    recipient = organization_ref(request.recipient) or request.recipient
    actors = provision.get("actor")
    named = recipient in _actor_refs(actors)

    def none(note: str) -> _Finding:
        return _Finding(ref, order, "none", note=note)

    if not _items(actors):
        return none(f"{ref} names no recipient, and a consent must name each one")
    if not named:
        return _Finding(ref, order, "none")
    if recipient not in _actor_refs(actors, role=RECIPIENT_ROLE):
        return none(f"{ref} names {recipient}, but not as recipient (role {RECIPIENT_ROLE})")
    unread = [name for name in _UNREAD_NARROWING if provision.get(name)]
    if unread:
        return none(f"{ref} narrows its permission by {', '.join(unread)}, which the hub cannot "
                    "check, so it is not used")
    actions = _items(provision.get("action"))
    if actions and not any("disclose" in _codes(a, CONSENT_ACTION_SYSTEM) for a in actions):
        return none(f"{ref} does not permit disclosure (action disclose)")
    purposes = _purpose_codes(provision.get("purpose"))
    if _items(provision.get("purpose")) and purpose not in purposes:
        allowed_for = _listing(_purpose_words(p) for p in purposes) if purposes else "no purpose"
        return none(f"{ref} permits {recipient} only for {allowed_for}, "
                    f"not for {_purpose_words(purpose)}")

    requested = request.resource_types
    withheld: dict[str, str] = {}
    if _items(provision.get("class")):
        listed = _codes(provision.get("class"), RESOURCE_TYPES_SYSTEM)
        covers = f"{ref} covers only {_listing(listed)}" if listed else f"{ref} lists no type"
        withheld.update((t, covers) for t in requested - listed)
    for nested in _items(provision.get("provision")):
        nested = _mapping(nested)
        if nested.get("type") not in (None, "deny") or not _applies(nested, request, purpose):
            continue
        removes = _removed(nested)
        if removes is None:
            return none(f"an exception in {ref} withholds everything from {recipient}")
        exception = f"an exception in {ref} withholds it from {recipient}"
        withheld.update((t, exception) for t in removes & requested if t not in withheld)
    allowed = requested - withheld.keys()
    if requested and not allowed:
        return none(f"{ref} does not permit {_listing(requested)} to {recipient}: "
                    + "; ".join(sorted(set(withheld.values()))))
    return _Finding(ref, order, "grant", allowed=frozenset(allowed),
                    withheld=tuple(sorted(withheld.items())))


# --- all consents and legal bases ----------------------------------------------------------------


def _withheld_text(why: Mapping[str, str]) -> str:
    """'CarePlan and Goal withheld: why; Flag withheld: why', grouping types by reason."""
    groups: dict[str, list[str]] = {}
    for rtype, text in sorted(why.items()):
        groups.setdefault(text, []).append(rtype)
    return "; ".join(f"{_listing(types)} withheld: {text}" for text, types in groups.items())


def decide(
    consents: Sequence[Mapping[str, Any]],
    request: DisclosureRequest,
    *,
    legal_bases: Sequence[LegalBasis] = DEFAULT_LEGAL_BASES,
) -> Verdict:
    """Whether the request may be disclosed under the patient's `consents` and `legal_bases`."""
    purpose = request.purpose or TREATMENT
    recipient = request.recipient
    requested = request.resource_types
    findings = [_evaluate(c, i, request, purpose) for i, c in enumerate(consents)]

    grants = [f for f in findings if f.effect == "grant"]
    winner = max(grants, key=lambda f: f.order) if grants else None
    newer_opt_outs = sorted(
        (f for f in findings
         if f.effect == "deny" and (winner is None or f.order > winner.order)),
        key=lambda f: f.order, reverse=True,
    )
    blocking = [f for f in newer_opt_outs if f.removes is None or f.removes & requested]

    why: dict[str, str] = dict(winner.withheld) if winner else {}
    consent_allowed = winner.allowed if winner else frozenset[str]()
    consent_ok = winner is not None
    for opt_out in blocking:
        cut = requested if opt_out.removes is None else opt_out.removes & requested
        text = f"{opt_out.ref} opts out of sharing it with {recipient}"
        why.update((t, text) for t in cut if t not in why)
        consent_allowed -= cut
        consent_ok = consent_ok and opt_out.removes is not None
    consent_ok = consent_ok and (not requested or bool(consent_allowed))
    if not consent_ok:
        consent_allowed = frozenset()

    bases = [b for b in legal_bases if request.event is not None and request.event in b.events]
    covered = frozenset[str]().union(*(b.resource_types for b in bases)) & requested
    basis = next((b for b in bases if b.resource_types & requested), bases[0] if bases else None)
    legal_ok = basis is not None and (not requested or bool(covered))

    if not consent_ok and not legal_ok:
        return _deny(findings, request, winner, blocking, basis)

    allowed = consent_allowed | covered
    redact = requested - allowed
    for rtype in redact:
        why.setdefault(rtype, f"no active consent permits it to {recipient}")
    extra = consent_allowed - covered  # what only the consent permits
    parts: list[str] = []
    if legal_ok and basis is not None:
        scope = f" for {_listing(covered)}" if covered and covered != requested else ""
        parts.append(f"event {request.event} has a legal basis ({basis.code}){scope}: {basis.text}")
    by_consent = winner if consent_ok and (extra or not legal_ok) else None
    if by_consent is not None:
        what = f" to receive {_listing(extra)}" if legal_ok else ""
        parts.append(f"{by_consent.ref} permits {recipient}{what} for {_purpose_words(purpose)}")
    if redact:
        parts.append(_withheld_text({t: why[t] for t in redact}))
    decided_by = by_consent.ref if by_consent else basis.code if basis else None
    return Verdict(
        decision="permit-with-redaction" if redact else "permit",
        basis=decided_by,
        reason=_capital("; ".join(parts)),
        redact=frozenset(redact),
    )


def _deny(
    findings: Sequence[_Finding], request: DisclosureRequest, winner: _Finding | None,
    blocking: Sequence[_Finding], basis: LegalBasis | None,
) -> Verdict:
    """The deny verdict, saying which consent or missing permission decided it."""
    recipient = request.recipient
    parts: list[str] = []
    decided_by: str | None = None
    if blocking:
        opt_out = blocking[0]
        decided_by = opt_out.ref
        text = f"{opt_out.ref} opts out of sharing with {recipient}"
        if winner is not None:
            text += f", and is newer than {winner.ref}, which permits it"
        if opt_out.revoked:
            text += ("; the opt-out was revoked, but a revoked opt-out does not bring back older "
                     "consents: a new consent is needed")
        parts.append(text)
    else:
        notes = [f.note for f in findings if f.note]
        parts.extend(notes or [f"no active consent names {recipient} as recipient"])
    if request.event is not None:
        if basis is None:
            parts.append(f"no legal basis for event {request.event}")
        else:
            parts.append(f"the legal basis {basis.code} for event {request.event} covers only "
                         f"{_listing(basis.resource_types)}, not "
                         f"{_listing(request.resource_types)}")
    return Verdict(decision="deny", basis=decided_by, reason=_capital("; ".join(parts)))


# --- consent-changed and $disclosure-check ----------------------------------------------------


def _permit_named(provision: Mapping[str, Any], *, root: bool = True) -> set[str]:
    """Organizations a provision and the provisions nested in it name to permit: the actors
    of a permit (a root without a type permits nothing; a nested one without a type is an
    exception, so a deny)."""
    kind = provision.get("type")
    refs = _actor_refs(provision.get("actor")) if kind == "permit" else set()
    for nested in _items(provision.get("provision")):
        refs |= _permit_named(_mapping(nested), root=False)
    return refs


def custodians(consent: Mapping[str, Any]) -> set[str]:
    """'Organization/<id>' of the organisations a Consent names as custodian."""
    return {o for o in (organization_ref(_mapping(r).get("reference"))
                        for r in _items(consent.get("organization"))) if o}


def consent_message_verdict(consent: Mapping[str, Any], recipient: str) -> Verdict:
    """Whether `recipient` may see `consent` (and so receive its consent-changed, also when
    it revokes): its custodian and the organisations its permit provisions name; never one
    it names only to deny (CONTRACT section 5)."""
    ref = _consent_ref(consent)
    if consent.get("resourceType") != "Consent" or ref is None:
        return Verdict("deny", None, "The consent has no id; store it before routing it")
    org = organization_ref(recipient)
    keepers = custodians(consent)
    actors = _permit_named(_mapping(consent.get("provision")))
    if org is None or org not in keepers | actors:
        return Verdict("deny", None, f"{recipient} is not named in {ref} as custodian or as "
                                     "one it permits; a consent goes only to those")
    role = "custodian" if org in keepers else "actor"
    revoked = " and its revocation" if consent.get("status") == "inactive" else ""
    return Verdict("permit", ref, f"{recipient} is named in {ref} (as {role}), so it receives "
                                  f"the consent{revoked}")


def explain(verdict: Verdict) -> dict[str, Any]:
    """The $disclosure-check answer (CONTRACT 5): Parameters decision, basis, reason, redact."""
    # CONTRACT 5 fixes decision as permit | deny; a redaction is a permit plus `redact` parts.
    parameters: list[dict[str, Any]] = [
        {"name": "decision", "valueCode": "deny" if verdict.decision == "deny" else "permit"}
    ]
    if verdict.basis is not None:
        if verdict.basis.startswith("Consent/"):
            parameters.append({"name": "basis", "valueReference": {"reference": verdict.basis}})
        else:
            parameters.append({"name": "basis", "valueCode": verdict.basis})
    parameters.append({"name": "reason", "valueString": verdict.reason})
    parameters.extend({"name": "redact", "valueCode": t} for t in sorted(verdict.redact))
    return {"resourceType": "Parameters", "parameter": parameters}
