"""The legal bases in force, read from the settings (CONTRACT section 5): the statutory
notices, the hub's own notices and replies. Routing, the send-time re-check and
$disclosure-check build the one consent gate from them."""

from __future__ import annotations

from sqlalchemy.orm import Session

from hub.auth.subject import Subject
from hub.config import Settings
from hub.consent.gate import Gate
from hub.consent.policy import DEFAULT_LEGAL_BASES, STATUTORY_NOTIFICATION, LegalBasis


def legal_bases(settings: Settings) -> tuple[LegalBasis, ...]:
    """The statutory bases in force: the default one, limited to the configured events, and
    the basis of the hub's own notices (HUB_FOLLOW_UP_LEGAL_BASIS) when one is configured."""
    events = frozenset(e.strip() for e in settings.legal_basis_events.split(",") if e.strip())
    bases = DEFAULT_LEGAL_BASES if events == STATUTORY_NOTIFICATION.events else (
        LegalBasis(STATUTORY_NOTIFICATION.code, events, STATUTORY_NOTIFICATION.resource_types,
                   STATUTORY_NOTIFICATION.text),)
    return (*bases, *hub_notice_bases(settings))


HUB_NOTICE_TYPES = frozenset({"MessageHeader", "Patient", "Task", "Encounter", "Consent",
                              "Communication"})
"""What the hub's own notices carry: the overdue Task, the expiring Consent (to its own
custodian), a Communication about an unacknowledged delivery (to its own sender)."""


def hub_notice_bases(settings: Settings) -> tuple[LegalBasis, ...]:
    """The legal basis of the hub's own notices (empty setting: none, consent only)."""
    code = settings.follow_up_legal_basis.strip()
    events = frozenset(e.strip() for e in settings.notice_legal_basis_events.split(",")
                       if e.strip())
    if not code or not events:
        return ()
    return (LegalBasis(code, events, HUB_NOTICE_TYPES, (
        "the duty to give cooperating health personnel the information needed for the "
        "patient's follow-up (helsepersonelloven § 45) and the centre's and municipality's "
        "duty to cooperate on it (spesialisthelsetjenesteloven § 2-1e, helse- og "
        "omsorgstjenesteloven § 3-4); administrative content only")),)


def reply_events(settings: Settings) -> frozenset[str]:
    """The events that go back under the legal basis `reply` (HUB_REPLY_BASIS_EVENTS)."""
    return frozenset(e.strip() for e in settings.reply_basis_events.split(",") if e.strip())


def gate(session: Session, settings: Settings) -> Gate:
    """The consent gate as routing asks it: the hub deciding with the configured bases."""
    return Gate(session, Subject.hub_itself(), legal_bases=legal_bases(settings),
                reply_events=reply_events(settings))
