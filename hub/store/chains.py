"""Chained and reverse-chained search criteria, following at each link only what the caller
may see.

- Chains (`subject:Patient.identifier=...`, `focus:ServiceRequest.subject:Patient.identifier=`,
  `subject:Patient.organization.identifier=...`): resources whose reference points at a
  resource that (through up to MAX_LINKS references) matches the last parameter.
- `_has` (`Patient?_has:Observation:patient:code=...`, nested `_has:A:x:_has:B:y:param=` up to
  MAX_LINKS): resources referred to, through that reference parameter, by a resource of the
  named type that matches.

A link through a record the caller may not see would make either an existence oracle: a
municipality could learn that a ServiceRequest hidden from it is about a given patient, or
that a patient it knows has an active Consent recorded by the centre. So every resource a
link goes through is one the consent gate lets the caller see. What it sees whatever a row
says (its own records, the directory: `Visibility.certain`) stays an index-driven subquery;
the other candidates the gate's SQL pre-filter admits are judged row by row (the same
decision as a read, left for the audit trail) and named by primary key.

What cannot be served (a modifier on the last parameter, an unknown or non-reference link, a
chain longer than MAX_LINKS) is None: the search reports it instead of applying it.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, and_, false, not_, or_, select, true, tuple_
from sqlalchemy.orm import Session

from hub.errors import BadRequestError
from hub.store.repository import R, get_current_by_pk
from hub.store.search_params import SearchParam, params_for
from hub.store.types import SERVED
from hub.store.values import T_REF, TABLE, value_clause
from hub.store.visibility import Visibility

MAX_LINKS = 3
"""Most references one chain (or one nest of `_has`) follows."""
MAX_JUDGED = 5_000
"""Most resources of other organisations one link may go through: each is named in the SQL
(both databases bound the parameters of one statement)."""
_CHUNK = 500


class Links:
    """Judges the resources a link goes through by the caller's visibility."""

    def __init__(self, session: Session, visibility: Visibility) -> None:
        self.session = session
        self.visibility = visibility
        self.name = ""  # the criterion being built, for messages
        # what the rows being judged are searched by: the parameter they matched, and the
        # reference of theirs the criterion follows (None: a link of a chain, which tells
        # what the resource points at)
        self.searched: tuple[str, ...] | None = None

    def visible(self, candidates: ColumnElement[bool]) -> ColumnElement[bool]:
        """A condition on `resources`: the rows `candidates` (a condition on `resources`)
        admits that the caller may see."""
        certain = self.visibility.certain()
        if certain is None:
            return candidates
        others = select(R.c.pk).where(candidates, not_(certain))
        clause = self.visibility.clause()
        if clause is not None:
            others = others.where(clause)
        pks: list[int] = list(self.session.execute(others.order_by(R.c.pk)).scalars())
        judged: list[int] = []
        for i in range(0, len(pks), _CHUNK):
            rows = get_current_by_pk(self.session, pks[i:i + _CHUNK])
            found_by = ("",) if self.searched is None else self.searched
            judged += [r.pk for r, ok in zip(rows, self.visibility.allows(rows, found_by),
                                             strict=True) if ok]
            if len(judged) > MAX_JUDGED:  # all visible to the caller: this reveals nothing
                raise BadRequestError(
                    f"A link of the chained or _has search parameter {self.name} goes through "
                    f"more than {MAX_JUDGED} resources of other organisations; narrow it.")
        # `IS true`: the certain part may not lead the plan (it would walk every record of
        # the caller's own and test each against the candidates).
        mine = and_(candidates, certain.is_(true()))
        return or_(mine, R.c.pk.in_(judged)) if judged else mine


def _matching(types: Sequence[str], sp: SearchParam, values: Sequence[str],
              name: str) -> ColumnElement[bool]:
    """Current resources of `types` whose `sp` matches one of `values`."""
    table = TABLE[sp.type]
    return and_(R.c.deleted == false(), R.c.pk.in_(
        select(table.c.resource_pk).where(
            table.c.resource_type.in_(list(types)), table.c.param == sp.code,
            or_(*[value_clause(sp, "", v, name) for v in values]))))


def _last_param(types: Sequence[str], code: str) -> tuple[list[str], SearchParam] | None:
    """The types among `types` that have parameter `code`, all of one type, and it."""
    found = [(t, sp) for t in types if (sp := params_for(t).get(code)) is not None]
    if not found or len({sp.type for _, sp in found}) != 1:
        return None
    return [t for t, _ in found], found[0][1]


def chained(links: Links, resource_type: str, name: str,
            values: Sequence[str]) -> ColumnElement[bool] | None:
    """The criterion `name=values` where `name` is a chain `ref[:Type].(ref[:Type].)*param`
    (None: not served)."""
    links.name = name
    *hops, last = name.split(".")
    if not hops or len(hops) > MAX_LINKS or ":" in last:
        return None
    steps: list[tuple[list[str], str]] = []  # (types holding the reference, its code)
    types = [resource_type]
    for hop in hops:
        code, _, target = hop.partition(":")
        holders = [t for t in types if (sp := params_for(t).get(code)) is not None
                   and sp.type == "reference"]
        if not holders:
            return None
        allowed = set().union(*(params_for(t)[code].targets for t in holders))
        if target and target not in SERVED or target and allowed and target not in allowed:
            return None
        types = [target] if target else sorted(allowed)
        steps.append((holders, code))
    found = _last_param(types, last)
    if found is None:
        return None
    # Inside out: the resources at the end of the chain the caller may see, then at each
    # link the ones it may see that point at those.
    links.searched = (last,)
    visible = links.visible(_matching(*found, values, name))
    links.searched = None
    for depth in range(len(steps) - 1, -1, -1):
        holders, code = steps[depth]
        targets = select(R.c.resource_type, R.c.logical_id).where(visible).correlate(None)
        pointing = select(T_REF.c.resource_pk).where(
            T_REF.c.resource_type.in_(holders), T_REF.c.param == code,
            tuple_(T_REF.c.target_type, T_REF.c.target_id).in_(targets))
        if depth == 0:
            return R.c.pk.in_(pointing)
        visible = links.visible(and_(R.c.deleted == false(), R.c.pk.in_(pointing)))
    return None  # pragma: no cover - the loop returns at depth 0


def reverse(links: Links, resource_type: str, name: str, values: Sequence[str],
            depth: int = 1) -> ColumnElement[bool] | None:
    """The criterion `_has:Type:ref:param=values` (or a nested `_has` in place of `param`):
    resources of `resource_type` that a resource of Type the caller may see refers to
    through `ref`, and that matches (None: not served)."""
    if depth == 1:
        links.name = name
    parts = name.split(":")
    if len(parts) < 4 or parts[0] != "_has" or depth > MAX_LINKS:
        return None
    rtype, ref, rest = parts[1], parts[2], ":".join(parts[3:])
    ref_sp = params_for(rtype).get(ref)
    if rtype not in SERVED or ref_sp is None or ref_sp.type != "reference" or (
            ref_sp.targets and resource_type not in ref_sp.targets):
        return None
    if rest.startswith("_has:"):
        inner = reverse(links, rtype, rest, values, depth + 1)
        if inner is None:
            return None
        candidates = and_(R.c.deleted == false(), inner)
    else:
        found = _last_param([rtype], rest) if ":" not in rest and "." not in rest else None
        if found is None:
            return None
        candidates = _matching(*found, values, name)
    # The matching resources tell what their `ref` points at: judged as searched by it too
    # (a Patient seen only as its records' holder tells nothing of its references).
    links.searched = ((rest, f"_include:{ref}") if ":" not in rest and "." not in rest
                      else None)
    # From the matching resources to their references (by resource), not from every
    # reference of the type: so no condition on T_REF.resource_type (implied by the pks).
    referring = select(T_REF.c.target_id).where(
        T_REF.c.resource_pk.in_(select(R.c.pk).where(links.visible(candidates))
                                .correlate(None)),
        T_REF.c.param == ref, T_REF.c.target_type == resource_type)
    return and_(R.c.resource_type == resource_type, R.c.logical_id.in_(referring))
