"""SQLite writers take turns across processes on `<database>-writer.lock` (hub/db/engine.py):
a writer waits for another process's turn without SQLite's growing busy sleeps, gives up after
the busy timeout, and concurrent processes lose no write."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError

from hub.config import Settings
from hub.db.engine import Database, _writers_lock


def _database(path: Path, timeout: float = 30.0) -> Database:
    url = f"sqlite:///{path}"
    return Database.connect(Settings(database_url=url, sqlite_busy_timeout=timeout))


def _make_counter(path: Path) -> None:
    db = _database(path)
    with db.session(write=True) as s:
        s.execute(text("CREATE TABLE counter (n INTEGER NOT NULL)"))
        s.execute(text("INSERT INTO counter (n) VALUES (0)"))
    db.dispose()


def _count(path: str, times: int) -> None:
    db = _database(Path(path))
    for _ in range(times):
        with db.session(write=True) as s:
            n = s.execute(text("SELECT n FROM counter")).scalar_one()
            s.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})
    db.dispose()


@pytest.fixture
def held(tmp_path: Path) -> Iterator[int]:
    """Another holder of the writers' lock file (a separate open file, as another process)."""
    _make_counter(tmp_path / "hub.db")
    fd = os.open(tmp_path / "hub.db-writer.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    yield fd
    os.close(fd)


def test_a_writer_waits_for_the_other_process_then_writes(tmp_path: Path, held: int) -> None:
    db = _database(tmp_path / "hub.db")
    finished: list[float] = []

    def write() -> None:
        _count(str(tmp_path / "hub.db"), 1)
        finished.append(time.monotonic())

    start = time.monotonic()
    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(0.3)
    assert not finished  # still waiting for the other holder
    fcntl.flock(held, fcntl.LOCK_UN)
    writer.join(10)
    assert finished
    assert finished[0] - start >= 0.3
    with db.session(write=False) as s:
        assert s.execute(text("SELECT n FROM counter")).scalar_one() == 1
    db.dispose()


def test_a_writer_gives_up_after_the_busy_timeout(tmp_path: Path, held: int) -> None:
    db = _database(tmp_path / "hub.db", timeout=0.3)
    start = time.monotonic()
    with pytest.raises(TimeoutError), db.session(write=True):
        pass
    assert 0.25 <= time.monotonic() - start < 5
    fcntl.flock(held, fcntl.LOCK_UN)
    with db.session(write=True) as s:  # the abandoned wait left nothing held behind
        s.execute(text("UPDATE counter SET n = 7"))
    with db.session(write=False) as s:
        assert s.execute(text("SELECT n FROM counter")).scalar_one() == 7
    db.dispose()


def test_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    _make_counter(path)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_count, args=(str(path), 40)) for _ in range(3)]
    for p in procs:
        p.start()
    _count(str(path), 40)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    db = _database(path)
    with db.session(write=False) as s:
        assert s.execute(text("SELECT n FROM counter")).scalar_one() == 160
    db.dispose()


def test_concurrent_writers_share_commits_and_a_failure_stays_its_own(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    _make_counter(path)
    db = _database(path)
    with db.session(write=True) as s:
        s.execute(text("CREATE TABLE seen (who TEXT NOT NULL)"))
    commits: list[int] = []
    event.listen(db.engine, "commit", lambda _conn: commits.append(1))
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        for j in range(15):
            try:
                with db.session(write=True) as s:
                    n = s.execute(text("SELECT n FROM counter")).scalar_one()
                    s.execute(text("INSERT INTO seen (who) VALUES (:w)"), {"w": f"{i}-{j}"})
                    time.sleep(0.002)  # work inside the transaction: others queue meanwhile
                    if j == 7 and i % 2:
                        raise LookupError("this one fails")
                    s.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})
            except LookupError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    with db.session(write=False) as s:
        n = s.execute(text("SELECT n FROM counter")).scalar_one()
        seen = set(s.execute(text("SELECT who FROM seen")).scalars())
    db.dispose()
    assert len(errors) == 4
    assert n == 8 * 15 - 4  # every transaction that returned is committed, and only those
    assert seen == {f"{i}-{j}" for i in range(8) for j in range(15) if not (j == 7 and i % 2)}
    assert len(commits) < 8 * 15  # queued writers shared commits


def test_a_commit_that_fails_fails_every_member_and_the_next_writer_goes_on(
        tmp_path: Path) -> None:
    # A deferred foreign key is checked only at COMMIT: the way a group's commit fails in
    # SQLite. Every member of that group is told, nothing of it stays, and the lock is free.
    path = tmp_path / "hub.db"
    db = _database(path, timeout=5)
    with db.session(write=True) as s:
        s.execute(text("CREATE TABLE parent (id INTEGER PRIMARY KEY)"))
        s.execute(text("CREATE TABLE child (parent_id INTEGER NOT NULL REFERENCES parent (id) "
                       "DEFERRABLE INITIALLY DEFERRED)"))
        s.execute(text("CREATE TABLE seen (who TEXT NOT NULL)"))
    queue = _writers_lock(db.engine)
    outcomes: dict[str, BaseException | None] = {}

    def orphan() -> None:  # its member releases fine; the group's COMMIT then fails
        try:
            with db.session(write=True) as s:
                s.execute(text("INSERT INTO child (parent_id) VALUES (42)"))
                deadline = time.monotonic() + 10
                while not queue.waiting and time.monotonic() < deadline:
                    time.sleep(0.005)  # the other writer queues: it joins this group
            outcomes["orphan"] = None
        except BaseException as exc:  # noqa: BLE001 - what the caller was told
            outcomes["orphan"] = exc

    def bystander() -> None:
        try:
            with db.session(write=True) as s:
                s.execute(text("INSERT INTO seen (who) VALUES ('bystander')"))
            outcomes["bystander"] = None
        except BaseException as exc:  # noqa: BLE001
            outcomes["bystander"] = exc

    first = threading.Thread(target=orphan)
    first.start()
    deadline = time.monotonic() + 10
    while queue.group is None and time.monotonic() < deadline:
        time.sleep(0.005)
    second = threading.Thread(target=bystander)
    second.start()
    first.join(30)
    second.join(30)
    assert isinstance(outcomes["orphan"], IntegrityError), outcomes
    assert isinstance(outcomes["bystander"], IntegrityError), outcomes  # shared the commit
    started = time.monotonic()
    with db.session(write=True) as s:  # control: the next writer gets the lock at once
        s.execute(text("INSERT INTO seen (who) VALUES ('next')"))
    assert time.monotonic() - started < 2
    with db.session(write=False) as s:
        assert list(s.execute(text("SELECT who FROM seen")).scalars()) == ["next"]
        assert s.execute(text("SELECT count(*) FROM child")).scalar_one() == 0
    db.dispose()
