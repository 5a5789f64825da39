"""bench/audit.py still runs end to end at a small size (it broke once unnoticed when the hub
stopped writing Consents as itself): its figures are only worth anything if it runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_audit_bench_runs_and_reports_verify_and_decisions(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "audit.py"), "--records", "2000", "--proofs", "20",
         "--appends", "40", "--threads", "2", "--decisions", "20", "--db", "sqlite"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "verify" in done.stdout
    assert "consent decision, consents read from the store" in done.stdout
