"""The disclosure policy: each rule of CONTRACT section 5, its violations, and two properties."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.parameters import Parameters
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.consent.policy import (
    DEFAULT_LEGAL_BASES,
    LegalBasis,
    Verdict,
    consent_message_verdict,
    decide,
    explain,
)
from hub.consent.policy import DisclosureRequest as Request

SHARED = Path(__file__).resolve().parents[3] / "shared"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TIME = "Organization/time-kommune"
KLEPP = "Organization/klepp-kommune"
DPS = "Organization/jaeren-dps"
ADMIN = frozenset({"MessageHeader", "Patient", "Encounter", "Task", "Organization", "Location"})

SCOPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                     "code": "patient-privacy"}]}
ROLE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
TYPES = "http://hl7.org/fhir/resource-types"


def actor(ref: str, role: str = "IRCP") -> dict[str, Any]:
    return {"role": {"coding": [{"system": ROLE, "code": role}]}, "reference": {"reference": ref}}


def purposes(*codes: str) -> list[dict[str, str]]:
    return [{"system": REASON, "code": c} for c in codes]


def classes(*types: str) -> list[dict[str, str]]:
    return [{"system": TYPES, "code": t} for t in types]


def consent(cid: str = "abc", /, *, when: str = "2026-11-22T19:48:40+00:00",
            only: list[dict[str, str]] | None = None, **provision: Any) -> dict[str, Any]:
    """An active privacy Consent like shared/examples/01: permits time-kommune for treatment.

    `only` is the provision's class; other keywords replace provision elements (None drops one).
    """
    prov: dict[str, Any] = {
        "type": "permit",
        "period": {"start": "2026-11-22T19:48:40+00:00"},
        "actor": [actor(TIME)],
        "purpose": purposes("TREAT"),
        "class": only,
    }
    prov.update(provision)
    return {
        "resourceType": "Consent", "id": cid, "status": "active", "scope": SCOPE,
        "patient": {"reference": "Patient/p1"}, "dateTime": when,
        "organization": [{"reference": DPS}],
        "provision": {k: v for k, v in prov.items() if v is not None},
    }


def opt_out(
    cid: str = "out", /, *, when: str = "2026-11-23T08:00:00Z", **provision: Any
) -> dict[str, Any]:
    """An active root-deny consent, for everybody unless `actor` is given."""
    return consent(cid, when=when, type="deny", actor=provision.pop("actor", None),
                   purpose=provision.pop("purpose", None), **provision)


def ask(recipient: str = TIME, types: frozenset[str] | set[str] = frozenset({"Encounter"}),
        *, purpose: str | None = None, event: str | None = None,
        now: datetime = NOW) -> Request:
    return Request(recipient=recipient, resource_types=frozenset(types), purpose=purpose,
                   event=event, now=now)


def with_status(c: dict[str, Any], status: str) -> dict[str, Any]:
    return {**c, "status": status}


# --- rule 1 and 2: default deny; which consents count ---------------------------------------------


def test_no_consent_no_event_is_denied() -> None:
    v = decide([], ask())
    assert v == Verdict("deny", None, f"No active consent names {TIME} as recipient")


def test_the_shared_example_consent_permits_its_recipient() -> None:
    bundle = json.loads((SHARED / "examples" / "01-consent-changed.json").read_text())
    example = {**bundle["entry"][1]["resource"], "id": "abc"}
    v = decide([example], ask(types={"Encounter", "Patient"}, event="care-plan-shared"))
    assert (v.decision, v.basis) == ("permit", "Consent/abc")
    assert v.reason == f"Consent/abc permits {TIME} for treatment"


@pytest.mark.parametrize(
    ("status", "words"),
    [
        ("draft", "is only a draft (status draft)"),
        ("proposed", "is proposed but not agreed (status proposed)"),
        ("rejected", "was rejected (status rejected)"),
        ("inactive", "was revoked (status inactive)"),
        ("entered-in-error", "was entered in error (status entered-in-error)"),
        ("unknown-status", "is not active (status unknown-status)"),
    ],
)
def test_only_an_active_consent_grants(status: str, words: str) -> None:
    v = decide([with_status(consent(), status)], ask(event="care-plan-shared"))
    assert v.decision == "deny"
    assert v.basis is None
    assert v.reason == f"Consent/abc {words}; no legal basis for event care-plan-shared"


@pytest.mark.parametrize(
    "scope",
    [
        {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                     "code": "treatment"}]},
        {"coding": [{"system": "http://example.org/other", "code": "patient-privacy"}]},
        {"coding": [{"code": "patient-privacy"}]},
        None,
    ],
)
def test_only_a_privacy_consent_grants(scope: Any) -> None:
    v = decide([{**consent(), "scope": scope}], ask())
    assert v.decision == "deny"
    assert "is not a privacy consent" in v.reason


@pytest.mark.parametrize(
    "not_a_consent",
    [{**consent(), "resourceType": "Contract"}, {k: v for k, v in consent().items() if k != "id"}],
)
def test_other_resources_and_consents_without_id_grant_nothing(not_a_consent: Any) -> None:
    assert decide([not_a_consent], ask()).decision == "deny"


@pytest.mark.parametrize(
    ("period", "decision", "reason"),
    [
        ({"start": "2026-11-23T12:00:00Z"}, "permit", "Consent/abc permits"),  # start inclusive
        ({"start": "2026-11-23T13:00:00+01:00"}, "permit", "Consent/abc permits"),
        ({"start": "2026-11-23T12:00:01Z"}, "deny",
         "Consent/abc is not in force until 2026-11-23T12:00:01Z"),
        ({"start": "2026-12"}, "deny", "Consent/abc is not in force until 2026-12"),
        ({"start": "2026"}, "permit", "Consent/abc permits"),
        ({"start": "2026-01-01", "end": "2026-11-23"}, "permit", "Consent/abc permits"),
        ({"start": "2026-01-01", "end": "2026-11-22"}, "deny", "Consent/abc expired on 2026-11-22"),
        ({"end": "2026-10-01"}, "deny", "Consent/abc expired on 2026-10-01"),
        ({"end": "2026-11-23T12:00:00Z"}, "deny",  # end exclusive
         "Consent/abc expired at 2026-11-23T12:00:00Z"),
        ({"end": "2026-11-23T12:00:00.001Z"}, "permit", "Consent/abc permits"),
        ({"end": "2026-11"}, "permit", "Consent/abc permits"),
        ({}, "permit", "Consent/abc permits"),
        (None, "permit", "Consent/abc permits"),
        ({"start": "23.11.2026"}, "deny", "Consent/abc has a period the hub cannot read"),
    ],
)
def test_now_must_be_inside_the_period(period: Any, decision: str, reason: str) -> None:
    v = decide([consent(period=period)], ask())
    assert v.decision == decision
    assert v.reason.startswith(reason)


def test_now_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ask(now=datetime(2026, 11, 23, 12, 0))


# --- rule 3: a permit names its recipients and may narrow by purpose and class --------------------


@pytest.mark.parametrize(
    ("actors", "decision", "reason"),
    [
        ([actor(TIME)], "permit", f"Consent/abc permits {TIME} for treatment"),
        ([actor("https://hub.example/fhir/Organization/time-kommune")], "permit", "Consent/abc"),
        ([actor(TIME + "/_history/3")], "permit", "Consent/abc"),
        ([actor(KLEPP), actor(TIME)], "permit", "Consent/abc"),
        ([{"role": {"coding": [{"system": ROLE, "code": "PRCP"},
                               {"system": ROLE, "code": "IRCP"}]},
           "reference": {"reference": TIME}}], "permit", "Consent/abc"),
        ([actor(TIME, "PRCP")], "deny",
         f"Consent/abc names {TIME}, but not as recipient (role IRCP)"),
        ([actor(TIME, "CST")], "deny", "but not as recipient"),
        ([{"role": {"coding": [{"system": "http://example.org", "code": "IRCP"}]},
           "reference": {"reference": TIME}}], "deny", "but not as recipient"),
        ([actor(KLEPP)], "deny", f"No active consent names {TIME} as recipient"),
        ([actor("Patient/time-kommune")], "deny", "No active consent names"),
        ([actor("fhir/Organization/time-kommune")], "deny", "No active consent names"),
        ([{"role": {"coding": [{"system": ROLE, "code": "IRCP"}]},
           "reference": {"identifier": {"value": "964969590"}}}], "deny", "No active consent"),
        (None, "deny", "Consent/abc names no recipient, and a consent must name each one"),
        ([], "deny", "Consent/abc names no recipient"),
    ],
)
def test_a_permit_names_its_recipient_with_role_ircp(
    actors: Any, decision: str, reason: str
) -> None:
    v = decide([consent(actor=actors)], ask())
    assert v.decision == decision
    assert reason in v.reason


@pytest.mark.parametrize(
    ("allowed", "asked", "decision"),
    [
        (None, "HRESCH", "permit"),  # no purpose in the consent: any purpose
        (None, None, "permit"),
        (["TREAT"], None, "permit"),  # no purpose asked: treatment
        (["TREAT"], "TREAT", "permit"),
        (["TREAT"], "HOPERAT", "deny"),
        (["TREAT", "HOPERAT"], "HOPERAT", "permit"),
        (["HRESCH"], None, "deny"),
    ],
)
def test_purpose_must_match(allowed: list[str] | None, asked: str | None, decision: str) -> None:
    prov_purpose = purposes(*allowed) if allowed is not None else None
    v = decide([consent(purpose=prov_purpose)], ask(purpose=asked))
    assert v.decision == decision


def test_a_purpose_mismatch_is_explained() -> None:
    v = decide([consent()], ask(purpose="HRESCH"))
    assert v.reason == f"Consent/abc permits {TIME} only for treatment, not for research"


def test_purpose_codes_of_another_system_do_not_match() -> None:
    v = decide([consent(purpose=[{"system": "http://example.org", "code": "TREAT"}])], ask())
    assert v.decision == "deny"


@pytest.mark.parametrize(
    ("listed", "asked", "decision", "redact"),
    [
        (["Encounter", "Patient"], {"Encounter", "Patient"}, "permit", set()),
        (["Encounter", "Patient"], {"Encounter"}, "permit", set()),
        (["Encounter", "Patient"], {"Encounter", "CarePlan", "Goal"}, "permit-with-redaction",
         {"CarePlan", "Goal"}),
        (["CarePlan"], {"Encounter"}, "deny", set()),
        (None, {"Encounter", "CarePlan"}, "permit", set()),
    ],
)
def test_class_narrows_to_resource_types(
    listed: list[str] | None, asked: set[str], decision: str, redact: set[str]
) -> None:
    v = decide([consent(only=classes(*listed) if listed else None)], ask(types=asked))
    assert (v.decision, set(v.redact)) == (decision, redact)
    if decision != "deny":
        assert v.basis == "Consent/abc"


def test_a_class_redaction_and_a_class_denial_are_explained() -> None:
    c = consent(only=classes("Encounter", "Patient"))
    partial = decide([c], ask(types={"Encounter", "CarePlan", "Goal"}))
    assert partial.reason == (f"Consent/abc permits {TIME} for treatment; CarePlan and Goal "
                              "withheld: Consent/abc covers only Encounter and Patient")
    none = decide([c], ask(types={"CarePlan"}))
    assert none.reason == (f"Consent/abc does not permit CarePlan to {TIME}: "
                           "Consent/abc covers only Encounter and Patient")


def test_a_class_of_another_system_lists_no_resource_type() -> None:
    c = consent(only=[{"system": "urn:ietf:bcp:13", "code": "application/hl7-cda+xml"}])
    assert decide([c], ask()).decision == "deny"


@pytest.mark.parametrize(
    ("extra", "decision"),
    [
        ({"action": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction",
                                  "code": "disclose"}]}]}, "permit"),
        ({"action": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction",
                                  "code": "access"}]}]}, "deny"),
        ({"securityLabel": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                             "code": "PSY"}]}, "deny"),
        ({"dataPeriod": {"start": "2026-01-01"}}, "deny"),
        ({"data": [{"meaning": "instance", "reference": {"reference": "CarePlan/1"}}]}, "deny"),
    ],
)
def test_a_permit_narrowed_by_what_the_hub_cannot_check_grants_nothing(
    extra: dict[str, Any], decision: str
) -> None:
    assert decide([consent(**extra)], ask()).decision == decision


def test_a_root_provision_without_type_grants_nothing() -> None:
    v = decide([consent(type=None)], ask())
    assert v.decision == "deny"
    assert v.reason == "Consent/abc does not say whether it permits or denies, so it grants nothing"


@pytest.mark.parametrize("path", sorted((SHARED / "fhir-r4-examples" / "Consent").glob("*.json")),
                         ids=lambda p: p.stem)
def test_no_r4_example_consent_grants_disclosure(path: Path) -> None:
    """None names an IRCP recipient under a root permit, so none may grant (default deny)."""
    example = json.loads(path.read_text())
    for who in ("Organization/f001", "Practitioner/f204"):
        v = decide([example], ask(who, {"Encounter", "MedicationRequest"},
                                  now=datetime(2016, 6, 23, 7, 10, tzinfo=UTC)))
        assert v.decision == "deny", v


# --- rule 4: nested denies cut out exceptions -----------------------------------------------------


@pytest.mark.parametrize(
    ("nested", "asked", "purpose", "decision", "redact"),
    [
        ({"type": "deny", "actor": [actor(TIME)]}, {"Encounter"}, None, "deny", set()),
        ({"type": "deny", "actor": [actor(TIME, "PRCP")]}, {"Encounter"}, None, "deny", set()),
        ({"type": "deny"}, {"Encounter"}, None, "deny", set()),  # no actor: everybody
        ({"actor": [actor(TIME)]}, {"Encounter"}, None, "deny", set()),  # untyped: an exception
        ({"type": "deny", "actor": [actor(KLEPP)]}, {"Encounter"}, None, "permit", set()),
        ({"type": "deny", "purpose": purposes("HRESCH")}, {"Encounter"}, None, "permit", set()),
        ({"type": "deny", "purpose": purposes("HRESCH")}, {"Encounter"}, "HRESCH", "deny", set()),
        ({"type": "deny", "class": classes("CarePlan")}, {"Encounter", "CarePlan"}, None,
         "permit-with-redaction", {"CarePlan"}),
        ({"type": "deny", "class": classes("CarePlan")}, {"CarePlan"}, None, "deny", set()),
        ({"type": "deny", "class": classes("CarePlan"), "actor": [actor(KLEPP)]},
         {"Encounter", "CarePlan"}, None, "permit", set()),
        ({"type": "deny", "period": {"end": "2026-11-01"}}, {"Encounter"}, None, "permit", set()),
        ({"type": "deny", "period": {"start": "2026-11-01"}}, {"Encounter"}, None, "deny", set()),
        ({"type": "permit", "actor": [actor(KLEPP)]}, {"Encounter"}, None, "permit", set()),
        # Deeper nesting is not read: a permit inside the deny does not reopen anything.
        ({"type": "deny", "provision": [{"type": "permit", "actor": [actor(TIME)]}]},
         {"Encounter"}, None, "deny", set()),
    ],
)
def test_nested_denies_cut_out_exceptions(
    nested: dict[str, Any], asked: set[str], purpose: str | None, decision: str,
    redact: set[str],
) -> None:
    c = consent(purpose=None, provision=[nested])
    v = decide([c], ask(types=asked, purpose=purpose))
    assert (v.decision, set(v.redact)) == (decision, redact)


def test_nested_permits_grant_no_one_new() -> None:
    c = consent(provision=[{"type": "permit", "actor": [actor(KLEPP)]}])
    assert decide([c], ask(KLEPP)).decision == "deny"


def test_nested_denies_are_explained() -> None:
    c = consent(provision=[{"type": "deny", "class": classes("CarePlan")},
                           {"type": "deny", "actor": [actor(KLEPP)]}])
    v = decide([c], ask(types={"Encounter", "CarePlan"}))
    assert v.reason == (f"Consent/abc permits {TIME} for treatment; CarePlan withheld: "
                        f"an exception in Consent/abc withholds it from {TIME}")
    everything = decide([consent(provision=[{"type": "deny"}])], ask())
    assert everything.reason == f"An exception in Consent/abc withholds everything from {TIME}"


# --- rules 5 and 6: opt-outs, several consents, the newest will --------------------------------


@pytest.mark.parametrize(
    ("consents", "decision", "basis"),
    [
        # root deny newer than the permit
        ([consent(), opt_out()], "deny", "Consent/out"),
        ([opt_out(), consent()], "deny", "Consent/out"),  # recency is dateTime, not position
        ([consent(), opt_out(actor=[actor(TIME)])], "deny", "Consent/out"),
        ([consent(), opt_out(actor=[actor(TIME, "PRCP")])], "deny", "Consent/out"),
        # permit newer than the deny
        ([opt_out(when="2026-11-01"), consent()], "permit", "Consent/abc"),
        # an opt-out for someone else, another purpose, or out of its period
        ([consent(), opt_out(actor=[actor(KLEPP)])], "permit", "Consent/abc"),
        ([consent(), opt_out(purpose=purposes("HRESCH"))], "permit", "Consent/abc"),
        ([consent(), opt_out(period={"end": "2026-11-23T11:00:00Z"})], "permit", "Consent/abc"),
        # an opt-out that was never agreed, or entered in error, does not count
        ([consent(), with_status(opt_out(), "draft")], "permit", "Consent/abc"),
        ([consent(), with_status(opt_out(), "entered-in-error")], "permit", "Consent/abc"),
        # a revoked opt-out does not bring back the older permit
        ([consent(), with_status(opt_out(), "inactive")], "deny", "Consent/out"),
        # ... but a permit given after it counts
        ([consent(when="2026-11-01"), with_status(opt_out(when="2026-11-10"), "inactive"),
          consent("new", when="2026-11-20")], "permit", "Consent/new"),
        # an opt-out alone
        ([opt_out()], "deny", "Consent/out"),
    ],
)
def test_the_latest_expression_of_will_wins(
    consents: list[dict[str, Any]], decision: str, basis: str
) -> None:
    v = decide(consents, ask())
    assert (v.decision, v.basis) == (decision, basis)


def test_an_opt_out_is_explained() -> None:
    v = decide([consent(), opt_out()], ask())
    assert v.reason == (f"Consent/out opts out of sharing with {TIME}, and is newer than "
                        "Consent/abc, which permits it")
    revoked = decide([consent(), with_status(opt_out(), "inactive")], ask())
    assert "a revoked opt-out does not bring back older consents" in revoked.reason


def test_an_opt_out_with_a_class_redacts_those_types_from_older_permits() -> None:
    v = decide([consent(), opt_out(only=classes("CarePlan"))],
               ask(types={"Encounter", "CarePlan"}))
    assert (v.decision, v.basis, set(v.redact)) == ("permit-with-redaction", "Consent/abc",
                                               {"CarePlan"})
    assert "CarePlan withheld: Consent/out opts out of sharing it with" in v.reason


@pytest.mark.parametrize(
    ("newer", "older", "basis"),
    [
        ({"when": "2026-11-22"}, {"when": "2026-11-21T23:59:59+00:00"}, "Consent/new"),
        ({"when": "2026-11-22T00:30:00+01:00"}, {"when": "2026-11-21T23:00:00Z"}, "Consent/new"),
    ],
)
def test_the_newest_permit_wins(
    newer: dict[str, Any], older: dict[str, Any], basis: str
) -> None:
    narrow = consent("new", **newer, only=classes("Encounter"))
    wide = consent("old", **older)
    for order in ([narrow, wide], [wide, narrow]):
        v = decide(order, ask(types={"Encounter", "CarePlan"}))
        assert (v.decision, v.basis) == ("permit-with-redaction", basis)
        assert v.redact == {"CarePlan"}


def test_last_updated_then_list_position_break_ties() -> None:
    same = "2026-11-22"
    permit = {**consent(when=same), "meta": {"lastUpdated": "2026-11-22T10:00:00Z"}}
    deny = {**opt_out(when=same), "meta": {"lastUpdated": "2026-11-22T09:00:00Z"}}
    assert decide([permit, deny], ask()).decision == "permit"
    assert decide([{**deny, "meta": {"lastUpdated": "2026-11-22T11:00:00Z"}}, permit],
                  ask()).decision == "deny"
    assert decide([consent(when=same), opt_out(when=same)], ask()).decision == "deny"
    assert decide([opt_out(when=same), consent(when=same)], ask()).decision == "permit"


def test_a_revoked_permit_never_grants_but_an_older_active_one_still_does() -> None:
    v = decide([consent("old", when="2026-11-01"), with_status(consent("new"), "inactive")],
               ask())
    assert (v.decision, v.basis) == ("permit", "Consent/old")


# --- legal bases ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event", ["admission-notice", "ready-for-discharge", "ready-for-discharge-withdrawn"]
)
def test_a_legal_basis_permits_administrative_content_without_consent(event: str) -> None:
    v = decide([], ask(types=ADMIN, event=event))
    assert (v.decision, v.basis, set(v.redact)) == ("permit", "statutory-notification", set())
    assert v.reason.startswith(f"Event {event} has a legal basis (statutory-notification): "
                               "statutory notice of admission and discharge readiness to the "
                               "municipality")


@pytest.mark.parametrize(
    ("consents", "asked", "decision", "basis", "redact"),
    [
        ([], {"Encounter", "CarePlan", "Flag"}, "permit-with-redaction", "statutory-notification",
         {"CarePlan", "Flag"}),
        ([consent()], {"Encounter", "CarePlan"}, "permit", "Consent/abc", set()),
        ([consent(only=classes("CarePlan"))], {"Encounter", "CarePlan", "Flag"},
         "permit-with-redaction", "Consent/abc", {"Flag"}),
        ([consent(only=classes("Encounter"))], {"Encounter", "CarePlan"},
         "permit-with-redaction", "statutory-notification", {"CarePlan"}),
        ([consent()], {"Encounter"}, "permit", "statutory-notification", set()),
        # the legal basis applies whatever the consents say
        ([consent(), opt_out()], {"Encounter", "Patient"}, "permit", "statutory-notification",
         set()),
        ([consent(), opt_out()], {"Encounter", "CarePlan"}, "permit-with-redaction",
         "statutory-notification", {"CarePlan"}),
        ([], {"CarePlan"}, "deny", None, set()),
    ],
)
def test_a_legal_basis_covers_administrative_types_only(
    consents: list[dict[str, Any]], asked: set[str], decision: str, basis: str | None,
    redact: set[str],
) -> None:
    v = decide(consents, ask(types=asked, event="admission-notice"))
    assert (v.decision, v.basis, set(v.redact)) == (decision, basis, redact)


def test_clinical_content_of_a_legal_basis_event_is_explained() -> None:
    v = decide([], ask(types={"Encounter", "CarePlan"}, event="admission-notice"))
    assert v.reason.endswith(f"; CarePlan withheld: no active consent permits it to {TIME}")
    both = decide([consent()], ask(types={"Encounter", "CarePlan"}, event="admission-notice"))
    assert f"; Consent/abc permits {TIME} to receive CarePlan for treatment" in both.reason
    only = decide([], ask(types={"CarePlan"}, event="admission-notice"))
    assert only.reason.endswith("; the legal basis statutory-notification for event "
                                "admission-notice covers only Encounter, Location, MessageHeader, "
                                "Organization, Patient and Task, not CarePlan")


@pytest.mark.parametrize(
    "event", ["care-plan-shared", "discharge-notice", "meeting-invitation", "follow-up-contact"]
)
def test_an_event_without_legal_basis_needs_consent(event: str) -> None:
    v = decide([], ask(types={"Encounter", "Patient"}, event=event))
    assert v == Verdict("deny", None, f"No active consent names {TIME} as recipient; "
                                      f"no legal basis for event {event}")


def test_legal_bases_are_configurable() -> None:
    request = ask(types={"Encounter"}, event="admission-notice")
    assert decide([], request, legal_bases=()).decision == "deny"
    custom = LegalBasis("hol-5-1", frozenset({"discharge-notice"}), frozenset({"Encounter"}),
                        "a test basis")
    v = decide([], ask(types={"Encounter"}, event="discharge-notice"), legal_bases=[custom])
    assert (v.decision, v.basis) == ("permit", "hol-5-1")
    assert DEFAULT_LEGAL_BASES[0].resource_types == ADMIN


def test_with_nothing_requested_a_grant_or_legal_basis_still_decides() -> None:
    assert decide([consent()], ask(types=set())).decision == "permit"
    assert decide([], ask(types=set(), event="admission-notice")).basis == "statutory-notification"
    assert decide([consent(provision=[{"type": "deny"}])], ask(types=set())).decision == "deny"
    assert decide([], ask(types=set())).decision == "deny"


# --- rule 8: consent-changed ----------------------------------------------------------------------


@pytest.mark.parametrize("status", ["active", "inactive", "entered-in-error"])
@pytest.mark.parametrize(
    ("recipient", "decision"),
    [
        (TIME, "permit"),  # an actor
        ("https://hub.example/fhir/Organization/time-kommune", "permit"),
        (DPS, "permit"),  # the custodian
        (KLEPP, "deny"),  # named only in a nested deny: never told (CONTRACT 5)
        ("Organization/sola-kommune", "deny"),
    ],
)
def test_a_consent_message_reaches_the_organisations_it_names(
    status: str, recipient: str, decision: str
) -> None:
    c = with_status(consent(provision=[{"type": "deny", "actor": [actor(KLEPP, "PRCP")]}]), status)
    v = consent_message_verdict(c, recipient)
    assert v.decision == decision
    assert v.basis == ("Consent/abc" if decision == "permit" else None)


def test_a_revocation_reaches_its_recipients_and_says_so() -> None:
    v = consent_message_verdict(with_status(consent(), "inactive"), TIME)
    assert v == Verdict("permit", "Consent/abc", f"{TIME} is named in Consent/abc (as actor), "
                                                 "so it receives the consent and its revocation")


def test_a_consent_message_without_an_id_is_held_back() -> None:
    c = {k: v for k, v in consent().items() if k != "id"}
    assert consent_message_verdict(c, TIME).decision == "deny"


# --- explain: the $disclosure-check answer --------------------------------------------------------


def _parts(params: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for p in params["parameter"]:
        out.setdefault(p["name"], []).append({k: v for k, v in p.items() if k != "name"})
    return out


@pytest.mark.parametrize(
    ("verdict", "expected"),
    [
        (Verdict("permit", "Consent/abc", "Consent/abc permits"),
         {"decision": [{"valueCode": "permit"}],
          "basis": [{"valueReference": {"reference": "Consent/abc"}}],
          "reason": [{"valueString": "Consent/abc permits"}]}),
        (Verdict("permit-with-redaction", "statutory-notification", "r",
                 frozenset({"Flag", "CarePlan"})),
         {"decision": [{"valueCode": "permit"}],
          "basis": [{"valueCode": "statutory-notification"}],
          "reason": [{"valueString": "r"}],
          "redact": [{"valueCode": "CarePlan"}, {"valueCode": "Flag"}]}),
        (Verdict("deny", None, "No active consent"),
         {"decision": [{"valueCode": "deny"}], "reason": [{"valueString": "No active consent"}]}),
        (Verdict("deny", "Consent/out", "opts out"),
         {"decision": [{"valueCode": "deny"}],
          "basis": [{"valueReference": {"reference": "Consent/out"}}],
          "reason": [{"valueString": "opts out"}]}),
    ],
)
def test_explain_answers_a_parameters_resource(
    verdict: Verdict, expected: dict[str, Any]
) -> None:
    params = explain(verdict)
    Parameters.model_validate(params)  # a valid R4(B) Parameters resource
    assert params["resourceType"] == "Parameters"
    assert _parts(params) == expected


def test_explain_of_real_verdicts_is_valid() -> None:
    for v in (decide([consent()], ask()), decide([], ask(event="care-plan-shared")),
              decide([], ask(types={"Encounter", "CarePlan"}, event="admission-notice")),
              consent_message_verdict(consent(), TIME)):
        Parameters.model_validate(explain(v))


# --- properties ----------------------------------------------------------------------------------

ORGS = (TIME, KLEPP, "https://hub.example/fhir/Organization/time-kommune")
RECIPIENTS = (TIME, KLEPP)
RESOURCE_TYPES = ("Encounter", "Patient", "CarePlan", "Goal", "Flag")
PURPOSE_CODES = ("TREAT", "HOPERAT", "HRESCH")
# (value, whether NOW is on or after it as a start, whether NOW is before it as an end)
BOUNDS = [
    ("2026", True, True), ("2026-11", True, True), ("2026-11-23", True, True),
    ("2026-11-22", True, False), ("2026-11-24", False, True), ("2026-10", True, False),
    ("2026-11-23T12:00:00Z", True, False), ("2026-11-23T12:00:01Z", False, True),
    ("2026-11-23T13:00:00+01:00", True, False), ("2026-11-23T11:59:59.999-00:00", True, False),
    ("2027", False, True), ("2025-12-31", True, False),
]

# Weighted towards what can grant, so that permits are common enough to test.
codings = st.lists(st.sampled_from(RESOURCE_TYPES), min_size=1, max_size=3, unique=True)


@st.composite
def periods(draw: st.DrawFn) -> tuple[dict[str, str] | None, bool]:
    """A period and whether NOW is inside it (worked out here, not by the policy)."""
    start = draw(st.none() | st.sampled_from(BOUNDS))
    end = draw(st.none() | st.sampled_from(BOUNDS))
    if start is None and end is None and draw(st.booleans()):
        return None, True
    period = {}
    if start:
        period["start"] = start[0]
    if end:
        period["end"] = end[0]
    return period, (start is None or start[1]) and (end is None or end[2])


@st.composite
def actors(draw: st.DrawFn) -> list[dict[str, Any]] | None:
    roles = st.sampled_from(["IRCP", "IRCP", "IRCP", "PRCP", "CST"])
    chosen = draw(st.lists(st.tuples(st.sampled_from(ORGS), roles), max_size=3))
    if not chosen and draw(st.booleans()):
        return None
    return [actor(ref, role) for ref, role in chosen]


@st.composite
def provisions(draw: st.DrawFn, *, nested: bool) -> dict[str, Any]:
    prov: dict[str, Any] = {}
    kind = draw(st.sampled_from(["deny"] if nested else ["permit", "permit", "deny", None]))
    if kind:
        prov["type"] = kind
    if (period := draw(periods()))[0] is not None and draw(st.booleans()):
        prov["period"] = period[0]
    if (who := draw(actors())) is not None:
        prov["actor"] = who
    if draw(st.booleans()):
        prov["purpose"] = purposes(*draw(st.lists(st.sampled_from(PURPOSE_CODES), min_size=1,
                                                  max_size=2, unique=True)))
    if draw(st.booleans()):
        prov["class"] = classes(*draw(codings))
    if not nested and draw(st.booleans()):
        prov["provision"] = draw(st.lists(provisions(nested=True), max_size=2))
    return prov


@st.composite
def consent_lists(draw: st.DrawFn) -> tuple[list[dict[str, Any]], set[str]]:
    """Random consents, and the ids of those whose period holds NOW."""
    out: list[dict[str, Any]] = []
    in_period: set[str] = set()
    for n in range(draw(st.integers(0, 4))):
        period, inside = draw(periods())
        prov = draw(provisions(nested=False))
        prov.pop("period", None)
        if period is not None:
            prov["period"] = period
        c: dict[str, Any] = {
            "resourceType": "Consent", "id": f"c{n}",
            "status": draw(st.sampled_from([*["active"] * 5, "inactive", "draft", "proposed",
                                            "rejected", "entered-in-error"])),
            "scope": draw(st.sampled_from([SCOPE, SCOPE, SCOPE,
                                           {"coding": [{"code": "patient-privacy"}]}])),
            "dateTime": draw(st.sampled_from(["2026-11-20", "2026-11-21T10:00:00Z",
                                              "2026-11-22T10:00:00+01:00", "2026"])),
            "provision": prov,
        }
        if draw(st.booleans()):
            c["meta"] = {"lastUpdated": draw(st.sampled_from(["2026-11-22T10:00:00Z",
                                                              "2026-11-23T10:00:00Z"]))}
        out.append(c)
        if inside:
            in_period.add(c["id"])
    return out, in_period


requests = st.builds(
    ask,
    st.sampled_from(RECIPIENTS),
    st.frozensets(st.sampled_from(RESOURCE_TYPES), max_size=4),
    purpose=st.none() | st.sampled_from(PURPOSE_CODES),
    event=st.sampled_from([None, "care-plan-shared", "meeting-invitation", "discharge-notice"]),
)
any_event_requests = st.builds(
    ask,
    st.sampled_from(RECIPIENTS),
    st.frozensets(st.sampled_from(RESOURCE_TYPES), max_size=4),
    purpose=st.none() | st.sampled_from(PURPOSE_CODES),
    event=st.sampled_from([None, "care-plan-shared", "admission-notice", "ready-for-discharge"]),
)


def _names_as_recipient(c: Mapping[str, Any], recipient: str) -> bool:
    org_id = recipient.removeprefix("Organization/")
    for a in c["provision"].get("actor", []):
        ref = a["reference"]["reference"]
        roles = {(x.get("system"), x.get("code")) for x in a["role"]["coding"]}
        same = ref == recipient or ref.endswith(f"/Organization/{org_id}")
        if (ROLE, "IRCP") in roles and same:
            return True
    return False


@settings(max_examples=600, deadline=None)
@given(consent_lists(), requests)
def test_no_permit_without_an_explicit_permit(
    generated: tuple[list[dict[str, Any]], set[str]], request: Request
) -> None:
    consents, in_period = generated
    v = decide(consents, request)
    if v.decision == "deny":
        assert not v.redact
        return
    assert v.basis is not None
    assert v.basis.startswith("Consent/")
    (c,) = [c for c in consents if f"Consent/{c['id']}" == v.basis]
    assert c["status"] == "active"
    assert c["scope"] == SCOPE
    assert c["id"] in in_period
    assert c["provision"].get("type") == "permit"
    assert _names_as_recipient(c, request.recipient)
    assert v.redact <= request.resource_types
    assert (v.decision == "permit-with-redaction") == bool(v.redact)


@settings(max_examples=500, deadline=None)
@given(consent_lists(), any_event_requests, st.data())
def test_a_revocation_never_turns_deny_into_permit(
    generated: tuple[list[dict[str, Any]], set[str]], request: Request, data: st.DataObject
) -> None:
    consents, _ = generated
    before = decide(consents, request)
    if before.decision != "deny" or not consents:
        return
    # The deciding consent when there is one, else any of them.
    deciding = [i for i, c in enumerate(consents) if f"Consent/{c['id']}" == before.basis]
    index = deciding[0] if deciding else data.draw(st.integers(0, len(consents) - 1))
    revoked = copy.deepcopy(consents)
    revoked[index]["status"] = "inactive"
    assert decide(revoked, request).decision == "deny"


@settings(max_examples=200, deadline=None)
@given(consent_lists(), any_event_requests)
def test_with_every_consent_revoked_only_a_legal_basis_permits(
    generated: tuple[list[dict[str, Any]], set[str]], request: Request
) -> None:
    consents, _ = generated
    v = decide([with_status(c, "inactive") for c in consents], request)
    if v.decision != "deny":
        assert v.basis == "statutory-notification"
        assert request.event in DEFAULT_LEGAL_BASES[0].events
        assert request.resource_types - v.redact <= ADMIN
