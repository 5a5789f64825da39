"""How long this process held each lock that all transactions share, for the benchmarks.

Off unless `HUB_LOCK_STATS_DIR` names a directory: then every `held(name, seconds)` adds to
this process's totals, and a daemon thread writes them every 0.2 s (and at exit) to
`<dir>/<pid>.json` as {"locks": {name: [seconds held, times taken]}, "at": unix time}.
bench/mixed.py sums the files of all hub processes before and after a phase. Costs one
dictionary update under a lock when on, one attribute test when off.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time

ENV = "HUB_LOCK_STATS_DIR"

_DIR = os.environ.get(ENV) or None
_totals: dict[str, list[float]] = {}
_guard = threading.Lock()
_writer: threading.Thread | None = None
_writer_pid = 0


def enabled() -> bool:
    """Whether lock times are being counted (HUB_LOCK_STATS_DIR set when the hub started)."""
    return _DIR is not None


def held(name: str, seconds: float) -> None:
    """Count one holding of lock `name` for `seconds` (no-op when off)."""
    if _DIR is None:
        return
    with _guard:
        entry = _totals.setdefault(name, [0.0, 0])
        entry[0] += seconds
        entry[1] += 1
    _start_writer()


def _dump() -> None:
    if _DIR is None:
        return
    with _guard:
        data = {"locks": {k: list(v) for k, v in _totals.items()}, "at": time.time()}
    path = os.path.join(_DIR, f"{os.getpid()}.json")
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
        os.replace(tmp, path)
    except OSError:
        pass


def _run() -> None:
    while True:
        time.sleep(0.2)
        _dump()


def _start_writer() -> None:
    global _writer, _writer_pid  # noqa: PLW0603  (one writer thread per process)
    if _writer is not None and _writer_pid == os.getpid():
        return
    with _guard:
        if _writer is not None and _writer_pid == os.getpid():
            return
        if _writer_pid != os.getpid():  # a forked child counts only its own holdings
            _totals.clear()
        _writer_pid = os.getpid()
        _writer = threading.Thread(target=_run, name="lock-stats", daemon=True)
        _writer.start()
        atexit.register(_dump)
