"""fhir-kit-client (npm), unmodified, run with Node against a live hub: token discovery,
create, search paged to the end, count, read, update, conditional create, a transaction,
$process-message, and a JSON Patch. The npm package is installed here (npm ci) when
missing, so a clean clone needs only node and npm (Debian's packages)."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import date
from pathlib import Path

from hub.fhir.identifiers import FNR_SYSTEM
from tests.clients.conftest import LiveHub, patient_json, transaction_of
from tests.factories import fnr
from tests.messaging.test_story import EXAMPLES, load

JS = Path(__file__).resolve().parent / "js"


def _node_ready() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node, "node is needed for the fhir-kit-client suite (apt-get install nodejs npm)"
    assert npm, "npm is needed for the fhir-kit-client suite (apt-get install npm)"
    if not (JS / "node_modules" / "fhir-kit-client" / "package.json").is_file():
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS,
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
    return node


def test_fhir_kit_client_does_the_everyday_work(live_hub: LiveHub, tmp_path: Path) -> None:
    node = _node_ready()
    number = fnr(date(1992, 2, 3))
    work = {
        "family": "Vik",
        "patients": [patient_json(fnr(date(1940 + i, 4, 5)), family=f"Vik{i}")
                     for i in range(5)],
        "criteria": f"identifier={FNR_SYSTEM}|{number}",
        "conditional": patient_json(number),
        "transaction": transaction_of(patient_json(fnr(date(1993, 3, 4)))),
        "message": load(next(p for p in EXAMPLES if "admission-notice" in p.name)),
    }
    (tmp_path / "work.json").write_text(json.dumps(work), encoding="utf-8")
    (tmp_path / "assertion.json").write_text(json.dumps({"assertion": live_hub.assertion()}),
                                             encoding="utf-8")
    done = subprocess.run([node, str(JS / "fhir-kit.mjs"), live_hub.fhir,
                           str(tmp_path / "assertion.json"), str(tmp_path / "work.json")],
                          cwd=JS, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])

    assert seen["tokenUrl"] == live_hub.token_url
    assert "SMART-on-FHIR" in seen["securityServices"]
    assert len(seen["created"]) == 5
    assert sorted(seen["searched"]) == sorted(seen["created"])
    assert seen["pages"] == 3
    assert seen["total"] == 5
    assert seen["updatedVersion"] == "2"
    assert seen["conditional"][0] == seen["conditional"][1]
    assert [s[:3] for s in seen["transaction"]] == ["201"]
    assert seen["messageResponse"]["code"] == "ok"
    assert seen["patch"] == ["male", "3"]
