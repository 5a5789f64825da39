"""Writing AuditEvents to the audit trail: one `Auditor` per process, used by the API, the UI and
the CLI alike, always inside the transaction of the action it records.

`record` appends one event. An action is recorded once per patient it touched (the records'
patient_ref column holds one patient, and BALP wants one event per patient), or once without a
patient when it touched none (`per_patient_entries`). `rest_entries` and `disclosure_entries`
build the usual events and `write` links any number of them in one append; `rest` and
`disclosures` do both at once. `Touched` says which resources and patients an action touched,
and the `touched_*` helpers work it out from what the store returned.

Disclosure decisions reach the auditor through the session: the consent gate appends one dict
per decision to `session.info["disclosures"]` (keys recipient, patient, resources, decision,
basis, reason, and event when a message was routed) and whoever ends the transaction hands
them to `disclosures`, with the interaction that led to them (`context`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from hub.audit import events, records
from hub.audit.events import JSON, Interaction, Outcome
from hub.audit.signing import Signer
from hub.auth.subject import Subject
from hub.errors import HubError
from hub.store import service
from hub.store.resources import StoredResource

DISCLOSURES = "disclosures"
"""The key of `session.info` under which the consent gate leaves its decisions."""

HUB = Subject.hub_itself()


@dataclass(frozen=True)
class Touched:
    """What an action touched: resource references and the patients they are about."""

    resources: tuple[str, ...] = ()
    patients: tuple[str, ...] = ()

    def __add__(self, other: Touched) -> Touched:
        return Touched(tuple(dict.fromkeys(self.resources + other.resources)),
                       tuple(dict.fromkeys(self.patients + other.patients)))


NOTHING = Touched()


def _ref(stored: StoredResource, *, versioned: bool) -> str:
    return (f"{stored.relative_url}/_history/{stored.version_id}" if versioned
            else stored.relative_url)


def touched_stored(stored: StoredResource | None, *, versioned: bool = True) -> Touched:
    """One stored version: its (version-specific) reference and its patients."""
    if stored is None:
        return NOTHING
    return Touched((_ref(stored, versioned=versioned),), tuple(events.patient_refs(stored.body)))


def touched_bodies(bodies: Iterable[Mapping[str, Any] | None]) -> Touched:
    """Only the patients of some resources (a search records its query, not its results)."""
    patients: dict[str, None] = {}
    for body in bodies:
        patients.update(dict.fromkeys(events.patient_refs(body)))
    return Touched((), tuple(patients))


def touched_deleted(session: Session, stored: StoredResource | None, *,
                    resource_type: str, resource_id: str) -> Touched:
    """A deletion: the resource, and the patients of the version it ended (read as the hub,
    so that a write-only client's delete is still attributed to its patient)."""
    if stored is None:  # nothing was there: the request names what it meant to delete
        return Touched((f"{resource_type}/{resource_id}",),
                       (f"Patient/{resource_id}",) if resource_type == "Patient" else ())
    before: StoredResource | None = None
    if stored.version_id > 1:
        try:
            before = service.vread(session, HUB, resource_type=resource_type,
                                   resource_id=resource_id, version_id=str(stored.version_id - 1))
        except HubError:
            before = None
    patients = events.patient_refs(before.body) if before is not None else []
    return Touched((_ref(stored, versioned=True),), tuple(patients))


def touched_bundle(session: Session, request: Mapping[str, Any],
                   response: Mapping[str, Any]) -> Touched:
    """A transaction or batch: every entry that succeeded, with the patients of what it wrote
    (read back as the hub), read or deleted."""
    out = NOTHING
    given = request.get("entry")
    asked: list[Any] = given if isinstance(given, list) else []
    for index, item in enumerate(response.get("entry") or []):
        answer = item.get("response") or {}
        if not str(answer.get("status", "")).startswith("2"):
            continue
        location = answer.get("location")
        if isinstance(location, str) and "/_history/" in location:
            out += _touched_location(session, location)
        resource = item.get("resource")
        if isinstance(resource, Mapping):
            inner = resource.get("entry") if resource.get("resourceType") == "Bundle" else None
            bodies = ([e.get("resource") for e in inner if isinstance(e, Mapping)]
                      if isinstance(inner, list) else [resource])
            out += touched_bodies(bodies)
        wanted = asked[index] if index < len(asked) and isinstance(asked[index], Mapping) else {}
        req = wanted.get("request") or {}
        if req.get("method") == "DELETE" and isinstance(req.get("url"), str):
            out += _touched_delete_url(session, req["url"])
    return out


def _touched_location(session: Session, location: str) -> Touched:
    path, _, version = location.partition("/_history/")
    rtype, _, rid = path.rpartition("/")
    rtype = rtype.rsplit("/", 1)[-1]
    try:
        stored = service.vread(session, HUB, resource_type=rtype, resource_id=rid,
                               version_id=version)
    except HubError:
        return Touched((location,))
    return touched_stored(stored)


def _touched_delete_url(session: Session, url: str) -> Touched:
    path = url.split("?", 1)[0].strip("/")
    parts = path.split("/")
    if "?" in url or len(parts) != 2:
        return NOTHING  # a conditional delete: what it matched is not known here
    rtype, rid = parts
    try:
        versions, _ = service.history(session, HUB, resource_type=rtype, resource_id=rid,
                                      count=2, offset=0)
    except HubError:
        return Touched((f"{rtype}/{rid}",))
    deletion = versions[0] if versions else None
    ref = _ref(deletion, versioned=True) if deletion else f"{rtype}/{rid}"
    before = versions[1].body if len(versions) > 1 else None
    return Touched((ref,), tuple(events.patient_refs(before)))


def take_disclosures(session: Session) -> list[dict[str, Any]]:
    """The disclosure decisions left in `session` by the consent gate, removed from it."""
    items = session.info.pop(DISCLOSURES, None)
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def _merged(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Decisions that differ only in their resources, as one decision naming them all."""
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for item in items:
        key = (item.get("recipient"), item.get("patient"), item.get("decision"),
               item.get("basis"), item.get("reason"), item.get("event"))
        group = groups.setdefault(key, {**item, "resources": []})
        for ref in item.get("resources") or []:
            if ref not in group["resources"]:
                group["resources"].append(ref)
    return list(groups.values())


class Auditor:
    """Appends AuditEvents to the trail with one signing key (load it once per process).

    The `*_entries` methods build entries without writing; `write` appends any number of
    them in one insert (what a request with several records needs).
    `rest`, `disclosures` and `record` build and write at once."""

    def __init__(self, signer: Signer, *, base_url: str | None = None) -> None:
        self.signer = signer
        self.base_url = base_url

    def write(self, session: Session, entries: Sequence[records.Entry]) -> list[int]:
        """Append `entries` in the caller's transaction (see records.append_all); their seqs."""
        return records.append_all(session, self.signer, entries)

    def record(self, session: Session, event: Mapping[str, Any], *, patient_ref: str | None,
               agent: str, action: str, subtype: str) -> int:
        """Append `event` in the caller's transaction (see records.append); its seq."""
        return self.write(session, [records.Entry(event, patient_ref, agent, action, subtype)])[0]

    @staticmethod
    def per_patient_entries(event: Mapping[str, Any], *, patient_refs: Sequence[str],
                            agent: str, action: str, subtype: str) -> list[records.Entry]:
        """One entry per patient of `patient_refs` (the event narrowed to that patient), or
        one without a patient when there is none."""
        patients: list[str | None] = list(dict.fromkeys(patient_refs)) or [None]
        return [records.Entry(events.for_patient(event, p), p, agent, action, subtype)
                for p in patients]

    def rest_entries(self, subject: Subject | None, *, interaction: Interaction,
                     resource_type: str | None, touched: Touched = NOTHING,
                     outcome: Outcome = "0", query: str | None = None,
                     description: str | None = None, operation: str | None = None,
                     address: str | None = None, request: str | None = None
                     ) -> list[records.Entry]:
        """The records of a RESTful interaction (events.rest_event), one per patient."""
        event = events.rest_event(
            subject, interaction=interaction, resource_type=resource_type,
            resource_ids=touched.resources, patient_refs=touched.patients, outcome=outcome,
            query=query, description=description, operation=operation, address=address,
            base_url=self.base_url, request=request)
        return self.per_patient_entries(event, patient_refs=touched.patients,
                                        agent=events.agent_name(subject),
                                        action=events.ACTION_OF[interaction],
                                        subtype=interaction)

    def rest(self, session: Session, subject: Subject | None, *, interaction: Interaction,
             resource_type: str | None, touched: Touched = NOTHING, outcome: Outcome = "0",
             query: str | None = None, description: str | None = None,
             operation: str | None = None, address: str | None = None,
             request: str | None = None) -> list[int]:
        """Record a RESTful interaction (see rest_entries); the seqs."""
        return self.write(session, self.rest_entries(
            subject, interaction=interaction, resource_type=resource_type, touched=touched,
            outcome=outcome, query=query, description=description, operation=operation,
            address=address, request=request))

    def disclosure_entries(self, items: Sequence[Mapping[str, Any]], *,
                           subject: Subject | None,
                           context: str | None = None) -> list[records.Entry]:
        """One Privacy Disclosure record per decision of the consent gate (decisions that
        differ only in their resources are merged). `context` is the interaction or operation
        of the request that led to them (read, search-type, $process-message), recorded with
        each decision that names no message event of its own."""
        entries = []
        agent = events.agent_name(subject if subject is not None else HUB)
        for item in _merged(items):
            patient = item.get("patient") if isinstance(item.get("patient"), str) else None
            event = events.disclosure_event(
                recipient_org=str(item.get("recipient") or "unknown"), patient_ref=patient,
                resource_refs=[str(r) for r in item["resources"]],
                decision=str(item.get("decision") or "deny"),
                basis=str(item["basis"]) if item.get("basis") else None,
                reason=str(item.get("reason") or ""), subject=subject, base_url=self.base_url,
                event=str(item["event"]) if item.get("event") else None,
                interaction=None if item.get("event") else context)
            entries.append(records.Entry(event, patient, agent, "R", events.DISCLOSE))
        return entries

    def disclosures(self, session: Session, items: Sequence[Mapping[str, Any]], *,
                    subject: Subject | None, context: str | None = None) -> list[int]:
        """Record the consent gate's decisions (see disclosure_entries); the seqs."""
        return self.write(session, self.disclosure_entries(items, subject=subject,
                                                           context=context))

    def event(self, session: Session, event: JSON, *, agent: str, subtype: str,
              patient_ref: str | None = None) -> int:
        """Record a built event, its action taken from the event itself."""
        return self.record(session, event, patient_ref=patient_ref, agent=agent,
                           action=str(event["action"]), subtype=subtype)
