"""`hub demo` seeding: realistic, valid, and idempotent."""

from __future__ import annotations

from hub.auth.subject import Subject
from hub.db.engine import Database
from hub.demo import seed
from hub.store import query as search_mod
from hub.store import service


def test_seed_twice_changes_nothing_the_second_time(database: Database) -> None:
    with database.session(write=True) as s:
        first = seed(s)
    with database.session(write=True) as s:
        second = seed(s)
    assert first == second
    me = Subject.hub_itself()
    with database.session(write=False) as s:
        for rtype, expected in (("Organization", 3), ("Patient", 3)):
            req = search_mod.parse_request(rtype, [], default_count=50, max_count=50)
            matches, _, _ = service.search(s, me, request=req)
            assert len(matches) == expected
            assert all(m.version_id == 1 for m in matches)
