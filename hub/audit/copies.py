"""One AuditEvent, one record: finding records that repeat another record's AuditEvent.

A record's writer's signature covers its body, and so the AuditEvent id inside it (a new
uuid4 for every event), but not the record's id (`seq`, given by the database after the
signing) nor its place in the tree. A byte copy of a genuine record, inserted with another
seq, therefore passes every check of its own: its hash, its signature and its columns hold.
What gives it away is its AuditEvent id, which the hub writes once: the `event_id` column is
unique in the database (migration 0015), and `hub audit verify` and the sealer look for a
repeated id themselves, since whoever can insert a row can also leave the column empty or
drop the index.

Of the records holding one AuditEvent the first is taken as the original: a sealed one
before any unsealed (the checkpoints signed it first), then by leaf index, then by seq (the
order the sealer seals in). The others are copies.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from hub.audit.models import AuditRecordRow
from hub.audit.records import event_id_of

_R = AuditRecordRow
_IN_BATCH = 1000  # ids per IN list: well within every driver's limit on bound values


@dataclass(frozen=True, order=True)
class Holder:
    """A record that holds an AuditEvent: its place (sealed first, by leaf, then by seq)."""

    unsealed: bool
    leaf_index: int
    seq: int

    @classmethod
    def of(cls, seq: int, leaf_index: int | None) -> Holder:
        """The holder of record `seq` at `leaf_index` (None: not sealed yet)."""
        return cls(leaf_index is None, -1 if leaf_index is None else int(leaf_index), int(seq))


def _bare(conn: Connection) -> dict[str, list[Holder]]:
    """The records without an event_id (written or sealed by a process older than migration
    0014, or a row slipped in without one), by their bodies' ids. Nearly always none."""
    found: dict[str, list[Holder]] = {}
    for seq, leaf_index, body in conn.execute(
            select(_R.seq, _R.leaf_index, _R.body).where(_R.event_id.is_(None))):
        event_id = event_id_of(bytes(body))
        if event_id is not None:
            found.setdefault(event_id, []).append(Holder.of(seq, leaf_index))
    return found


def holders(conn: Connection, event_ids: Iterable[str]) -> dict[str, list[Holder]]:
    """The records that hold each of `event_ids` (by the event_id column, and by the body of
    each record without one), in order: the first is the original. Ids held by no record
    are left out."""
    wanted = sorted(set(event_ids))
    found: dict[str, list[Holder]] = {}
    for start in range(0, len(wanted), _IN_BATCH):
        for seq, leaf_index, event_id in conn.execute(
                select(_R.seq, _R.leaf_index, _R.event_id)
                .where(_R.event_id.in_(wanted[start:start + _IN_BATCH]))):
            if event_id is not None:
                found.setdefault(event_id, []).append(Holder.of(seq, leaf_index))
    for event_id, bare in _bare(conn).items():
        if event_id in wanted:
            found.setdefault(event_id, []).extend(bare)
    return {event_id: sorted(held) for event_id, held in found.items()}


def repeated(conn: Connection) -> dict[str, list[Holder]]:
    """Every AuditEvent held by more than one record, with its holders in order (the first
    the original). One grouping of the event_id column (an index scan) and a look at the
    records without one."""
    ids = [e for e in conn.execute(select(_R.event_id).where(_R.event_id.is_not(None))
                                   .group_by(_R.event_id).having(func.count() > 1)).scalars()
           if e is not None]
    found = holders(conn, ids) if ids else {}
    bare = _bare(conn)
    if bare:
        found.update(holders(conn, bare))
    return {event_id: held for event_id, held in found.items() if len(held) > 1}


def copy_reason(copy: Holder, original: Holder, event_id: str) -> str:
    """Why record `copy` is broken: it repeats `original`'s AuditEvent."""
    if original.unsealed:
        return (f"records {original.seq} and {copy.seq} hold the same AuditEvent ({event_id}), "
                "which the hub writes once: one of them is a copy inserted into the trail")
    return (f"record {copy.seq} is a copy of record {original.seq} (the same AuditEvent, "
            f"{event_id}, sealed at leaf {original.leaf_index}): inserted into the trail")


def problem_of(conn: Connection, seq: int, leaf_index: int | None, event_id: str | None
               ) -> str | None:
    """Why record `seq` (at `leaf_index`, holding AuditEvent `event_id`, its body's) is a
    copy of another record; None if it is the first to hold its AuditEvent."""
    if event_id is None:
        return None
    held = holders(conn, [event_id]).get(event_id, [])
    if not held or held[0].seq == seq:
        return None
    return copy_reason(Holder.of(seq, leaf_index), held[0], event_id)
