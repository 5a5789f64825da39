"""AuditEvents (FHIR R4) for what happens at the hub, in the shapes of IHE BALP.

Pure builders: JSON in, JSON out, no database and no clock (`chain.append` sets `id`,
`recorded` and the audit-index extension). The patterns followed (IHE Basic Audit Log
Patterns 1.1):

- RESTful interactions (`rest_event`): type audit-event-type#rest, subtype the
  restful-interaction code; action C (create), R (read, vread, history), U (update), D (delete),
  E (search, transaction, batch, operation). Agents: the client (identified by its client_id,
  with its organisation as a second agent, BALP's "userorg"), or the signed-in person; and the
  hub as server. Roles as BALP gives them: for reads the client is the Destination Role ID and
  the hub the Source, for queries, creates and updates the other way round; a delete names the
  client as Application and the hub as custodian. Entities: the resource(s) (System Object,
  Domain Resource; version-specific where known), the query (base64 in `query`, plain in
  `description`) and the patient(s) (Person, Patient). BALP's Patient* profiles name one
  patient per event; `for_patient` narrows an event to one.
- Privacy Disclosure at the source (`disclosure_event`): type DCM#110106 Export, subtype
  iso-21089-lifecycle#disclose, the hub as source agent, the receiving organisation as
  recipient, the patient and the data as entities, and the consent decision as one more entity:
  `what` is the Consent (BALP's AuthZconsent entity) or the legal-basis code, and `detail`
  carries decision, basis and reason. A deny is a disclosure that did not happen: outcome 4.
- Sign-in (`sign_in_event`): type DCM#110114 User Authentication, subtype DCM#110122 Login.
- Token issuance (`token_event`): type DCM#110114, subtype the hub's `token` (SMART Backend
  Services, shaped like IUA's Get Access Token).
- Admin actions (`admin_event`): type DCM#110100 Application Activity, subtype the hub's
  `admin`, the operator as agent with role admin, the target as entity.
- A delivery's course where it is not itself a disclosure (`delivery_event`): dead-lettered,
  replayed. Type DCM#110100 Application Activity, subtype the hub's `delivery`, the hub as
  source, the receiving organisation as destination, whoever replayed as a further agent; the
  patient, the message Bundle and the delivery (object role Job, its state in `detail`) as
  entities. (Each push that sent the message, taken or refused, is a Privacy Disclosure.)

Every event's source observer is the hub (a Device displayed "CareHub").
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from hub.auth.subject import Subject

JSON = dict[str, Any]
Outcome = Literal["0", "4", "8", "12"]
Interaction = Literal["read", "vread", "history-instance", "search-type", "create", "update",
                      "delete", "transaction", "batch", "operation"]

HUB_NAME = "CareHub"
CAREHUB = "http://carehub.example/fhir"
AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
LIFECYCLE = "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ROLE_CLASS = "http://terminology.hl7.org/CodeSystem/v3-RoleClass"
PROVENANCE_PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
SECURITY_ROLE = "http://terminology.hl7.org/CodeSystem/extra-security-role-type"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
HUB_SUBTYPE = f"{CAREHUB}/CodeSystem/audit-event-subtype"
HUB_OPERATION = f"{CAREHUB}/CodeSystem/operation"
USER_ROLE = f"{CAREHUB}/CodeSystem/user-role"
LEGAL_BASIS = f"{CAREHUB}/CodeSystem/legal-basis"
CLIENT_ID_SYSTEM = f"{CAREHUB}/sid/client-id"
USERNAME_SYSTEM = f"{CAREHUB}/sid/username"
OS_USER_SYSTEM = f"{CAREHUB}/sid/os-user"
DELIVERY_ID_SYSTEM = f"{CAREHUB}/sid/delivery-id"

ACTION_OF: dict[str, str] = {
    "read": "R", "vread": "R", "history-instance": "R", "search-type": "E", "create": "C",
    "update": "U", "delete": "D", "transaction": "E", "batch": "E", "operation": "E",
}
"""The AuditEvent.action of each restful interaction (BALP)."""

# Column `subtype` of the records (hub.audit.models), for the ones that are not interactions.
DISCLOSE = "disclose"
LOGIN = "login"
TOKEN = "token"
ADMIN = "admin"
DELIVERY = "delivery"

HUB_DEVICE: JSON = {"type": "Device", "display": HUB_NAME}
"""The hub as a reference: source observer of every event, and the server agent."""

_SOURCE_ROLE = {"system": DCM, "code": "110153", "display": "Source Role ID"}
_DESTINATION_ROLE = {"system": DCM, "code": "110152", "display": "Destination Role ID"}
_APPLICATION = {"system": DCM, "code": "110150", "display": "Application"}
_CUSTODIAN = {"system": PROVENANCE_PARTICIPANT, "code": "custodian", "display": "Custodian"}
_RECIPIENT = {"system": PARTICIPATION, "code": "IRCP", "display": "information recipient"}
_AUTHOR = {"system": PARTICIPATION, "code": "AUT", "display": "author (originator)"}
_HUMAN_USER = {"system": SECURITY_ROLE, "code": "humanuser", "display": "human user"}
_AUTH_SERVER = {"system": SECURITY_ROLE, "code": "authserver", "display": "authorization server"}
_PROVIDER = {"system": ROLE_CLASS, "code": "PROV", "display": "healthcare provider"}
_PERSON = {"system": ENTITY_TYPE, "code": "1", "display": "Person"}
_SYSTEM_OBJECT = {"system": ENTITY_TYPE, "code": "2", "display": "System Object"}
_OTHER = {"system": ENTITY_TYPE, "code": "4", "display": "Other"}
_PATIENT_ROLE = {"system": OBJECT_ROLE, "code": "1", "display": "Patient"}
_DOMAIN_RESOURCE = {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"}
_SECURITY_RESOURCE = {"system": OBJECT_ROLE, "code": "13", "display": "Security Resource"}
_QUERY_ROLE = {"system": OBJECT_ROLE, "code": "24", "display": "Query"}
_JOB_ROLE = {"system": OBJECT_ROLE, "code": "20", "display": "Job"}

PATIENT_FIELDS = ("subject", "patient", "for", "beneficiary")
"""Where a resource names the patient it is about (the first that refers to a Patient)."""


# --- small parts ---------------------------------------------------------------------------


def agent_name(subject: Subject | None) -> str:
    """The value of the records' `agent` column for `subject`: Client/<client_id>,
    User/<username>, System/<id>; "anonymous" when nobody was identified."""
    if subject is None:
        return "anonymous"
    kind = {"client": "Client", "user": "User"}.get(subject.kind, "System")
    return f"{kind}/{subject.id}"


def patient_refs(resource: Mapping[str, Any] | None) -> list[str]:
    """The patients a resource is about: `Patient/<id>` for a Patient, else the Patient
    references in subject / patient / for / beneficiary (relative, `Patient/<id>`)."""
    if not resource:
        return []
    if resource.get("resourceType") == "Patient":
        rid = resource.get("id")
        return [f"Patient/{rid}"] if isinstance(rid, str) and rid else []
    found: list[str] = []
    for name in PATIENT_FIELDS:
        value = resource.get(name)
        for ref in value if isinstance(value, list) else [value]:
            patient = _patient_of(ref)
            if patient is not None and patient not in found:
                found.append(patient)
    return found


def _patient_of(ref: Any) -> str | None:
    if not isinstance(ref, Mapping):
        return None
    text = ref.get("reference")
    if not isinstance(text, str):
        return None
    parts = text.split("/_history/")[0].rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == "Patient" and parts[-1]:
        return f"Patient/{parts[-1]}"
    return None


def _outcome(outcome: Outcome, description: str | None) -> JSON:
    out: JSON = {"outcome": outcome}
    if description:
        out["outcomeDesc"] = description
    return out


def _source() -> JSON:
    return {"site": HUB_NAME, "observer": dict(HUB_DEVICE),
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}]}


def _network(address: str | None, kind: str) -> JSON:
    """kind: 1 machine name, 2 IP address, 5 URI (R4 network-type)."""
    return {"network": {"address": address, "type": kind}} if address else {}


def _server(role: Mapping[str, str], base_url: str | None) -> JSON:
    return {"type": {"coding": [dict(role)]}, "who": dict(HUB_DEVICE), "requestor": False,
            **_network(base_url, "5")}


def subject_agents(subject: Subject | None, role: Mapping[str, str], *,
                   address: str | None = None, requestor: bool = True,
                   author: bool = False) -> list[JSON]:
    """The acting party as agents: a client (who.identifier = client_id, in `role`) and the
    organisation it acts for; a person (username, role; BALP's user agent: author when
    `author`, else information recipient); the hub itself; or an unidentified caller."""
    if subject is None:
        return [{"type": {"coding": [dict(role)]}, "who": {"display": "unidentified caller"},
                 "requestor": requestor, **_network(address, "2")}]
    agents: list[JSON] = []
    if subject.kind == "client":
        agents.append({"type": {"coding": [dict(role)]},
                       "who": {"identifier": {"system": CLIENT_ID_SYSTEM, "value": subject.id}},
                       "requestor": requestor, **_network(address, "2")})
    elif subject.kind == "user":
        person = _AUTHOR if author else _RECIPIENT
        user: JSON = {"type": {"coding": [dict(person)]},
                      "who": {"identifier": {"system": USERNAME_SYSTEM, "value": subject.id},
                              "display": subject.id},
                      "name": subject.id, "requestor": requestor}
        if subject.role:
            user["role"] = [{"coding": [{"system": USER_ROLE, "code": subject.role}]}]
        agents.append(user)
    else:
        agents.append({"type": {"coding": [dict(_APPLICATION)]}, "who": dict(HUB_DEVICE),
                       "requestor": requestor})
    if subject.organization_id:
        agents.append({"type": {"coding": [dict(_PROVIDER)]},
                       "who": {"reference": f"Organization/{subject.organization_id}"},
                       "requestor": False})
    return agents


def patient_entity(patient_ref: str) -> JSON:
    """The BALP patient entity."""
    return {"what": {"reference": patient_ref}, "type": dict(_PERSON), "role": dict(_PATIENT_ROLE)}


def _data_entity(ref: str) -> JSON:
    return {"what": {"reference": ref}, "type": dict(_SYSTEM_OBJECT),
            "role": dict(_DOMAIN_RESOURCE)}


def _query_entity(query: str) -> JSON:
    return {"type": dict(_SYSTEM_OBJECT), "role": dict(_QUERY_ROLE),
            "description": query,
            "query": base64.b64encode(query.encode("utf-8")).decode("ascii")}


def _is_patient_entity(entity: Mapping[str, Any]) -> bool:
    role = entity.get("role") or {}
    return role.get("system") == OBJECT_ROLE and role.get("code") == "1"


def for_patient(event: Mapping[str, Any], patient_ref: str | None) -> JSON:
    """A copy of `event` naming only `patient_ref` as patient (none when None): BALP wants one
    event per patient when an action touches several."""
    entities = [e for e in event.get("entity", []) if not _is_patient_entity(e)]
    if patient_ref is not None:
        entities.append(patient_entity(patient_ref))
    out = {k: v for k, v in event.items() if k != "entity"}
    if entities:
        out["entity"] = entities
    return out


def _refs(resource_type: str | None, ids: Iterable[str]) -> list[str]:
    out: list[str] = []
    for rid in ids:
        ref = rid if "/" in rid or resource_type is None else f"{resource_type}/{rid}"
        if ref not in out:
            out.append(ref)
    return out


# --- the events ----------------------------------------------------------------------------


def rest_event(
    subject: Subject | None,
    *,
    interaction: Interaction,
    resource_type: str | None,
    resource_ids: Sequence[str] = (),
    patient_refs: Sequence[str] = (),
    outcome: Outcome = "0",
    query: str | None = None,
    description: str | None = None,
    operation: str | None = None,
    address: str | None = None,
    base_url: str | None = None,
    request: str | None = None,
) -> JSON:
    """A RESTful interaction (BALP Create / Read / Update / Delete / Query, Patient* when
    `patient_refs` are given). `resource_ids` are ids of `resource_type` or references
    (`Type/id`, `Type/id/_history/v`); `query` is the raw query string of a search;
    `description` explains a failure (outcomeDesc); `operation` names an operation
    (`$validate`); `address` is the caller's IP address, `base_url` the hub's FHIR base;
    `request` ("GET /fhir/...: 404") records the HTTP request of a failure."""
    action = ACTION_OF[interaction]
    subtype = [{"system": RESTFUL, "code": interaction, "display": interaction}]
    if operation:
        subtype.append({"system": HUB_OPERATION, "code": operation, "display": operation})
    if interaction in ("read", "vread", "history-instance"):
        client_role, server_role = _DESTINATION_ROLE, _SOURCE_ROLE
    elif interaction == "delete":
        client_role, server_role = _APPLICATION, _CUSTODIAN
    else:
        client_role, server_role = _SOURCE_ROLE, _DESTINATION_ROLE
    entities = [_data_entity(ref) for ref in _refs(resource_type, resource_ids)]
    if query is not None:
        entities.append(_query_entity(query))
    if request:
        entities.append({"type": dict(_OTHER), "name": "HTTP request", "description": request})
    entities.extend(patient_entity(p) for p in dict.fromkeys(patient_refs))
    event: JSON = {
        "resourceType": "AuditEvent",
        "type": {"system": AUDIT_EVENT_TYPE, "code": "rest", "display": "Restful Operation"},
        "subtype": subtype,
        "action": action,
        **_outcome(outcome, description),
        "agent": [*subject_agents(subject, client_role, address=address,
                                  author=action in ("C", "U", "D")
                                  or interaction in ("transaction", "batch")),
                  _server(server_role, base_url)],
        "source": _source(),
    }
    if entities:
        event["entity"] = entities
    return event


def _basis_entity(decision: str, basis: str | None, reason: str,
                  context: Sequence[tuple[str, str]] = ()) -> JSON:
    detail = [{"type": "decision", "valueString": decision}]
    if basis:
        detail.append({"type": "basis", "valueString": basis})
    if reason:
        detail.append({"type": "reason", "valueString": reason})
    detail.extend({"type": kind, "valueString": value} for kind, value in context if value)
    if basis and basis.startswith("Consent/"):
        return {"what": {"reference": basis},
                "type": {"system": RESOURCE_TYPES, "code": "Consent", "display": "Consent"},
                "role": dict(_SECURITY_RESOURCE), "detail": detail}
    entity: JSON = {"type": dict(_SYSTEM_OBJECT), "role": dict(_SECURITY_RESOURCE),
                    "name": "legal basis" if basis else (
                        "no consent or legal basis" if decision == "deny" else "no basis recorded"),
                    "detail": detail}
    if basis:
        entity["what"] = {"identifier": {"system": LEGAL_BASIS, "value": basis}}
    return entity


def disclosure_event(
    *,
    recipient_org: str,
    patient_ref: str | None,
    resource_refs: Sequence[str],
    decision: str,
    basis: str | None,
    reason: str,
    subject: Subject | None,
    base_url: str | None = None,
    event: str | None = None,
    interaction: str | None = None,
) -> JSON:
    """A disclosure decision (BALP Privacy Disclosure at the source): `recipient_org`
    ("Organization/x") got — or, when `decision` is deny, did not get — `resource_refs` about
    `patient_ref`, on `basis` (a "Consent/<id>" reference, a legal-basis code, or None).
    `subject` is whoever's request led to the decision. What led to it goes in the basis
    entity's detail, for the disclosure log: `event` (a message-event code: the message was
    routed) or `interaction` (a restful interaction or operation: the recipient read)."""
    withheld = decision == "deny"
    agents = [
        {"type": {"coding": [dict(_SOURCE_ROLE)]}, "who": dict(HUB_DEVICE), "requestor": False,
         **_network(base_url, "5")},
        {"type": {"coding": [dict(_DESTINATION_ROLE)]}, "who": {"reference": recipient_org},
         "requestor": False},
    ]
    if subject is not None and not subject.sees_everything:
        agents.extend(subject_agents(subject, _RECIPIENT))
    entities = [patient_entity(patient_ref)] if patient_ref else []
    entities.extend(_data_entity(ref) for ref in dict.fromkeys(resource_refs))
    entities.append(_basis_entity(decision, basis, reason,
                                  (("event", event or ""), ("interaction", interaction or ""))))
    text = f"{'withheld' if withheld else decision}: {reason}" if reason else decision
    return {
        "resourceType": "AuditEvent",
        "type": {"system": DCM, "code": "110106", "display": "Export"},
        "subtype": [{"system": LIFECYCLE, "code": "disclose",
                     "display": "Disclose Record Lifecycle Event"}],
        "action": "R",
        **_outcome("4" if withheld else "0", text),
        "agent": agents,
        "source": _source(),
        "entity": entities,
    }


SIGN_IN_TEXT = {
    "success": "signed in",
    "wrong-password": "wrong password",
    "locked": "the account is paused after repeated failures",
    "unknown-user": "no such user",
    "disabled": "the account is disabled",
}


def sign_in_event(username: str, outcome: str, reason: str | None = None, *,
                  role: str | None = None, address: str | None = None) -> JSON:
    """A sign-in attempt at /ui (DCM User Authentication / Login). `outcome` is a
    hub.auth.users.SignInOutcome; anything but success is a failure (outcome 4)."""
    text = reason or SIGN_IN_TEXT.get(outcome, outcome)
    user: JSON = {"type": {"coding": [dict(_HUMAN_USER)]},
                  "who": {"identifier": {"system": USERNAME_SYSTEM, "value": username},
                          "display": username},
                  "name": username, "requestor": True, **_network(address, "2")}
    if role:
        user["role"] = [{"coding": [{"system": USER_ROLE, "code": role}]}]
    return {
        "resourceType": "AuditEvent",
        "type": {"system": DCM, "code": "110114", "display": "User Authentication"},
        "subtype": [{"system": DCM, "code": "110122", "display": "Login"}],
        "action": "E",
        **_outcome("0" if outcome == "success" else "4", text),
        "agent": [user, {"type": {"coding": [dict(_AUTH_SERVER)]}, "who": dict(HUB_DEVICE),
                         "requestor": False}],
        "source": _source(),
    }


def token_event(client_id: str | None, *, organization_id: str | None, outcome: Outcome,
                reason: str | None = None, scope: str | None = None,
                verified: bool = True, address: str | None = None) -> JSON:
    """A token request at /auth/token (SMART Backend Services). `client_id` is the client the
    assertion proved, or (verified=False) the one it only claimed to be."""
    if client_id is None:
        who: JSON = {"display": "unidentified caller"}
    else:
        who = {"identifier": {"system": CLIENT_ID_SYSTEM, "value": client_id}}
        if not verified:
            who["display"] = f"claimed client_id {client_id} (not verified)"
    agents: list[JSON] = [
        {"type": {"coding": [dict(_APPLICATION)]}, "who": who, "requestor": True,
         **_network(address, "2")},
        {"type": {"coding": [dict(_AUTH_SERVER)]}, "who": dict(HUB_DEVICE), "requestor": False},
    ]
    if organization_id:
        agents.append({"type": {"coding": [dict(_PROVIDER)]},
                       "who": {"reference": f"Organization/{organization_id}"},
                       "requestor": False})
    event: JSON = {
        "resourceType": "AuditEvent",
        "type": {"system": DCM, "code": "110114", "display": "User Authentication"},
        "subtype": [{"system": HUB_SUBTYPE, "code": TOKEN, "display": "Get Access Token"}],
        "action": "E",
        **_outcome(outcome, reason),
        "agent": agents,
        "source": _source(),
    }
    if scope is not None:
        event["entity"] = [{"type": dict(_SYSTEM_OBJECT), "role": dict(_SECURITY_RESOURCE),
                            "name": "access token",
                            "detail": [{"type": "scope", "valueString": scope}]}]
    return event


def admin_event(actor: str, action_text: str, target: str | None, *,
                outcome: Outcome = "0") -> JSON:
    """An administrative action by an operator (`actor`: the OS user running `hub`), e.g.
    action_text "org add ...", target "Organization/time-kommune" (or Client/<client_id>,
    User/<username>)."""
    event: JSON = {
        "resourceType": "AuditEvent",
        "type": {"system": DCM, "code": "110100", "display": "Application Activity"},
        "subtype": [{"system": HUB_SUBTYPE, "code": ADMIN, "display": "administration"}],
        "action": "E",
        **_outcome(outcome, action_text),
        "agent": [
            {"type": {"coding": [dict(_AUTHOR)]},
             "who": {"identifier": {"system": OS_USER_SYSTEM, "value": actor},
                     "display": actor},
             "name": actor, "requestor": True,
             "role": [{"coding": [{"system": USER_ROLE, "code": "admin"}]}]},
            {"type": {"coding": [dict(_APPLICATION)]}, "who": dict(HUB_DEVICE),
             "requestor": False},
        ],
        "source": _source(),
    }
    entity: JSON = {"type": dict(_SYSTEM_OBJECT), "role": dict(_SECURITY_RESOURCE),
                    "description": action_text}
    if target:
        entity["what"] = _target(target)
    event["entity"] = [entity]
    return event


def _target(target: str) -> JSON:
    """A FHIR reference for Type/id, an identifier for Client/<client_id> and User/<name>."""
    kind, _, value = target.partition("/")
    system = {"Client": CLIENT_ID_SYSTEM, "User": USERNAME_SYSTEM}.get(kind)
    if system is not None and value:
        return {"identifier": {"system": system, "value": value}}
    if value and kind[:1].isupper() and kind.isalpha():
        return {"reference": target}
    return {"identifier": {"value": target}}


def delivery_event(*, delivery_id: int, recipient_org: str, patient_ref: str | None,
                   message_ref: str, text: str, state: Sequence[tuple[str, str]],
                   outcome: Outcome = "0", subject: Subject | None = None,
                   base_url: str | None = None) -> JSON:
    """A step in the course of delivery `delivery_id` of `message_ref` ("Bundle/<id>") to
    `recipient_org` that discloses nothing by itself (dead-lettered: outcome 8; replayed:
    outcome 0, `subject` the one who replayed). `state` is the delivery's state as detail
    pairs (status, attempts, last-error, since), `text` the step in words."""
    agents = [
        {"type": {"coding": [dict(_SOURCE_ROLE)]}, "who": dict(HUB_DEVICE), "requestor": False,
         **_network(base_url, "5")},
        {"type": {"coding": [dict(_DESTINATION_ROLE)]}, "who": {"reference": recipient_org},
         "requestor": False},
    ]
    if subject is not None and not subject.sees_everything:
        agents.extend(subject_agents(subject, _AUTHOR, author=True))
    entities = [patient_entity(patient_ref)] if patient_ref else []
    entities.append(_data_entity(message_ref))
    entities.append({"type": dict(_SYSTEM_OBJECT), "role": dict(_JOB_ROLE),
                     "what": {"identifier": {"system": DELIVERY_ID_SYSTEM,
                                             "value": str(delivery_id)}},
                     "name": f"delivery {delivery_id}", "description": text,
                     "detail": [{"type": kind, "valueString": value}
                                for kind, value in state if value]})
    return {
        "resourceType": "AuditEvent",
        "type": {"system": DCM, "code": "110100", "display": "Application Activity"},
        "subtype": [{"system": HUB_SUBTYPE, "code": DELIVERY, "display": "message delivery"}],
        "action": "E",
        **_outcome(outcome, text),
        "agent": agents,
        "source": _source(),
        "entity": entities,
    }
