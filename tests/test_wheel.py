"""The built wheel works on its own: installed in a fresh virtualenv outside the checkout,
`hub demo --no-serve` seeds and tells its story (validating and indexing every message
against fhir_profiles/), and the installed package validates a message by its profile and a
resource by the R4 binding table (fhir_profiles/r4/)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.conftest import SHARED

ROOT = Path(__file__).resolve().parent.parent

_CHECK = """
import json, sys
from pathlib import Path
import hub
from hub.fhir.paths import PROFILES_DIR
from hub.fhir.validation import validate_message, validate_resource
root = Path(sys.argv[1])
assert root not in Path(hub.__file__).resolve().parents, hub.__file__
assert root not in PROFILES_DIR.resolve().parents, PROFILES_DIR
good = json.loads(Path(sys.argv[2]).read_text(encoding="utf-8"))
assert validate_message(good) == [], validate_message(good)
bad = json.loads(Path(sys.argv[2]).read_text(encoding="utf-8"))
bad["entry"][0]["resource"]["eventCoding"]["code"] = "no-such-event"
issues = validate_message(bad)
assert issues, "an unknown event must be invalid"
bogus = {"resourceType": "Encounter", "status": "bogus", "class": {"code": "IMP"}}
where = [i.expression for i in validate_resource(bogus)]
assert "Encounter.status" in where, f"the R4 binding table is not in the wheel: {where}"
print("validated", len(good["entry"]), "entries;", len(issues), "issue(s) in the bad one")
"""


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, f"{args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.timeout(900)
def test_the_wheel_installed_elsewhere_runs_the_demo_and_validates(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HUB_", "VIRTUAL_ENV", "PYTHONPATH"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    # build from a copy: setuptools leaves build/ and *.egg-info in the tree it builds
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "*.db*",
        "carehub-demo", "var", ".hub"))
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist),
          str(source)], tmp_path, env, 600)
    (wheel,) = dist.glob("carehub-*.whl")
    fresh = tmp_path / "fresh-venv"
    venv.create(fresh, with_pip=True)
    python = fresh / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", str(wheel)], tmp_path, env, 600)

    work = tmp_path / "elsewhere"
    work.mkdir()
    env["HUB_DATABASE_URL"] = f"sqlite:///{work / 'carehub.db'}"
    env["HUB_AUDIT_KEY_FILE"] = str(work / "audit-key.pem")
    out = _run([str(fresh / "bin" / "hub"), "demo", "--no-serve"], work, env, 600)
    assert "Traceback" not in out
    assert (work / "carehub-demo").is_dir()
    example = SHARED / "examples" / "03-admission-notice.json"
    if not example.exists():
        example = sorted((SHARED / "examples").glob("0*-*.json"))[0]
    out = _run([str(python), "-c", _CHECK, str(ROOT), str(example)], work, env, 120)
    assert "validated" in out
