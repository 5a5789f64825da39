"""Who and what a message is about: matching its resources to stored ones, and rewriting its
references to stored ids (CONTRACT section 4, "What a message carries").

Patients are matched by fødselsnummer or D-nummer, whichever name of the system (OID or hl7.no
alias) the sender or an earlier writer used; every other resource by its type and the
identifier its sender chose. A match becomes a new version; no match, a new resource. An
entry whose fullUrl is the hub's own URL of a resource is a new version of that resource.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from hub.auth.subject import Subject
from hub.db.locks import identity_name, lock_names
from hub.errors import InvalidResourceError, Issue
from hub.fhir import refs
from hub.fhir.identifiers import (
    DNR_SYSTEM,
    FNR_SYSTEM,
    person_identifier_pairs,
    person_numbers,
)
from hub.store import service
from hub.store.types import SERVED, WRITABLE


@dataclass
class Placement:
    """Where one bundle entry goes in the store."""

    index: int
    resource_type: str
    resource_id: str
    exists: bool  # True: a new version of a stored resource
    by_full_url: bool = False  # named by the hub's own URL, not matched by identifier


def _identifiers(resource: dict[str, Any]) -> list[dict[str, Any]]:
    ident = resource.get("identifier")
    if isinstance(ident, dict):
        return [ident]
    return [i for i in (ident or []) if isinstance(i, dict) and i.get("value")]


def _match_pairs(resource: dict[str, Any]) -> list[tuple[str | None, str]]:
    """(system, value) of every identifier an entry is matched (and locked) by: for a
    Patient, every way a stored Patient may carry the fødselsnummer and D-nummer it names,
    under either name of their systems (the OID, or HL7 Norway's hl7.no alias), as REST
    writes of a Patient match and lock them; for any other type, its identifiers."""
    if resource.get("resourceType") == "Patient":
        return list(person_identifier_pairs(person_numbers(resource)))
    return [(i.get("system"), str(i["value"])) for i in _identifiers(resource)]


def _identity_names(entries: list[dict[str, Any]]) -> list[str]:
    """'Type|system|value' of every identifier an entry may be matched by."""
    names = []
    for index, entry in enumerate(entries):
        resource = entry.get("resource")
        if index == 0 or not isinstance(resource, dict):
            continue
        names += [identity_name(str(resource.get("resourceType")), system, value)
                  for system, value in _match_pairs(resource)]
    return names


def place_entries(session: Session, hub: Subject, entries: list[dict[str, Any]],
                  fhir_base: str, sender_org: str | None = None) -> list[Placement]:
    """Decide, for each entry after the MessageHeader, the stored id it becomes.

    Where an entry's identifiers match several stored resources, the sender's own are meant
    (`_meant`): another organisation cannot make a sender's messages ambiguous by creating,
    by REST, a record under the same identifier.

    The identities looked up are locked first (hub.db.locks), all at once and until the
    transaction ends: two messages about the same new patient, accepted side by side by two
    hub processes, would otherwise both find none and make two."""
    lock_names(session, _identity_names(entries))
    placements: list[Placement] = []
    to_match: list[tuple[int, str, list[service.Wanted]]] = []  # looked up all at once
    for index, entry in enumerate(entries):
        resource = entry["resource"]
        rtype = resource["resourceType"]
        if index == 0 or rtype not in WRITABLE:
            continue
        where = f"Bundle.entry[{index}].resource"
        full_url = str(entry.get("fullUrl") or "")
        own_prefix = f"{fhir_base}/{rtype}/"
        if full_url.startswith(own_prefix):
            rid = full_url[len(own_prefix):]
            if not service.exists(session, hub, resource_type=rtype, resource_id=rid):
                raise InvalidResourceError(
                    f"{where}: fullUrl {full_url} names no stored {rtype}.",
                    expression=f"Bundle.entry[{index}].fullUrl")
            placements.append(Placement(index, rtype, rid, True, by_full_url=True))
            continue
        if full_url.startswith(f"{fhir_base}/"):  # the hub's URL of something else
            raise InvalidResourceError(
                f"{where}: fullUrl {full_url} is the hub's address of something other than a "
                f"{rtype}; an entry's hub fullUrl is {own_prefix}<id> (a new version of it), "
                "else use urn:uuid:.", expression=f"Bundle.entry[{index}].fullUrl")
        pairs = _match_pairs(resource)
        if rtype == "Patient" and not pairs:
            raise InvalidResourceError(
                f"{where}: the Patient needs a fødselsnummer ({FNR_SYSTEM}) or D-nummer "
                f"({DNR_SYSTEM}); the hub matches people by it.",
                expression=f"{where}.identifier")
        to_match.append((index, rtype, [
            service.Wanted(system, value, frozenset({rtype})) for system, value in pairs]))
    matches = iter(service.find_by_identifiers(
        session, hub, [w for _, _, wanted in to_match for w in wanted]))
    for index, rtype, wanted in to_match:
        where = f"Bundle.entry[{index}].resource"
        found: dict[str, None] = {}
        for _ in wanted:
            for match in next(matches):
                found[match.id] = None
        if len(found) > 1:
            found = dict.fromkeys(_meant(session, rtype, list(found), sender_org))
        if len(found) > 1:
            raise InvalidResourceError(
                f"{where}: its identifiers match {len(found)} stored {rtype} resources "
                f"({', '.join(sorted(found))}); the hub cannot tell which one is meant.",
                expression=f"{where}.identifier")
        if found:
            placements.append(Placement(index, rtype, next(iter(found)), True))
        else:
            placements.append(Placement(index, rtype, str(uuid.uuid4()), False))
    return sorted(placements, key=lambda p: p.index)


def _meant(session: Session, rtype: str, ids: list[str], sender_org: str | None, *,
           first_of_any_type: bool = False) -> list[str]:
    """Which of several matches a message from `sender_org` means: the sender's own; for a
    Patient none of which is the sender's, the one the hub stored first (the person as the hub
    first kept them: a database from before the store kept one Patient per person may hold a
    second one an organisation made by REST, which does not change whom everyone else's
    messages are about).
    `first_of_any_type`: the one stored first for every type, not Patients only (a reference
    only links, so the original is meant: a copy under its identifier comes later).
    More than one left is still ambiguous."""
    made = service.owners_first_made_first(session, resource_type=rtype, resource_ids=ids)
    own = [rid for rid, owner in made if sender_org is not None and owner == sender_org]
    if own:
        return own
    if (rtype == "Patient" or first_of_any_type) and made:
        return [made[0][0]]
    return ids


def resolve_references(session: Session, hub: Subject, node: Any, refs: dict[str, str],
                       where: str, issues: list[Issue], sender_org: str | None = None) -> Any:
    """A copy of `node` with bundle-internal references (fullUrls) and identifier-only
    references rewritten to stored 'Type/id'; unresolvable internal references are issues.
    An identifier-only reference that matches several resources of one type means the
    sender's own, else the one stored first (`_meant`): a record another organisation makes
    by REST under a known identifier does not unlink the sender's references."""
    if isinstance(node, list):
        return [resolve_references(session, hub, v, refs, f"{where}[{i}]", issues, sender_org)
                for i, v in enumerate(node)]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        out[key] = resolve_references(session, hub, value, refs, f"{where}.{key}", issues,
                                      sender_org)
    ref = out.get("reference")
    if isinstance(ref, str):
        if ref in refs:
            out["reference"] = refs[ref]
        elif ref.startswith("urn:uuid:"):
            issues.append(Issue(f"{where}.reference {ref} is no entry of this message.",
                                "invalid", "error", f"{where}.reference"))
    elif isinstance(out.get("identifier"), dict) and "reference" not in out:
        target = _by_identifier(session, hub, out, sender_org)
        if target:
            out["reference"] = target
    return out


def _by_identifier(session: Session, hub: Subject, ref: dict[str, Any],
                   sender_org: str | None) -> str | None:
    ident = ref["identifier"]
    if not ident.get("value"):
        return None
    rtype = ref.get("type")
    types = frozenset({rtype}) if isinstance(rtype, str) and rtype in SERVED else None
    found = service.find_by_identifier(session, hub, system=ident.get("system"),
                                       value=str(ident["value"]), resource_types=types)
    kinds = {f.resource_type for f in found}
    if len(found) > 1 and len(kinds) == 1:  # several of one type: which one is meant
        meant = _meant(session, kinds.pop(), [f.id for f in found], sender_org,
                       first_of_any_type=True)
        if len(meant) == 1:
            return f"{found[0].resource_type}/{meant[0]}"
    return found[0].relative_url if len(found) == 1 else None


reference_target = refs.target
