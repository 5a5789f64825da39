"""`hub mllp` as its own process, killed with SIGKILL while it takes a message: the PAS gets
no ACK, sends again to the restarted hub, and the message has one effect."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapters.mllp.framing import frame
from adapters.mllp.simulator import Pas, adt
from hub.config import Settings
from hub.db.engine import Database
from tests.adapters.mllp.acks import kept, read
from tests.adapters.mllp.conftest import register, stay
from tests.delivery.receivers import free_port

ROOT = Path(__file__).resolve().parents[3]


def _start(settings: Settings, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HUB_DATABASE_URL": settings.database_url,
           "HUB_AUDIT_KEY_FILE": settings.audit_key_file}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from hub.cli import app; app()", "mllp", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log.open("ab"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"hub mllp did not listen: {log.read_text()}")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


@pytest.mark.timeout(180)
def test_sigkill_mid_message_then_the_resent_message_has_one_effect(
        settings: Settings, database: Database, tmp_path: Path) -> None:
    register(database)
    port, log = free_port(), tmp_path / "mllp.log"
    hub = _start(settings, port, log)
    try:
        # 1. Killed with half a frame read: nothing of it is kept.
        half = frame(adt(stay("K1"), "A01", "KILL-1"))
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(half[:len(half) // 2])
            time.sleep(0.2)
            _kill(hub)
        assert kept(database).messages == 0
        # 2.-4. Killed just after a whole frame arrived: maybe committed, surely not answered.
        for n, pause in enumerate((0.0, 0.01, 0.05), start=2):
            hub = _start(settings, port, log)
            message = adt(stay(f"K{n}"), "A01", f"KILL-{n}")
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(frame(message))
                time.sleep(pause)
                _kill(hub)
            hub = _start(settings, port, log)
            with Pas("127.0.0.1", port, timeout=10) as pas:  # the PAS sends it again
                assert read(pas.send(message)).code == "AA"
            _kill(hub)
        # The first message, sent again whole once the hub is back.
        hub = _start(settings, port, log)
        with Pas("127.0.0.1", port, timeout=10) as pas:
            assert read(pas.send(adt(stay("K1"), "A01", "KILL-1"))).code == "AA"
    finally:
        if hub.poll() is None:
            _kill(hub)
    after = kept(database)
    assert after.messages == 4  # one per message, however often it was sent
    assert after.deliveries == 4
