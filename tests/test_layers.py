"""The layering contract bites: a copy of the hub with one forbidden import fails
lint-imports, and the same copy without it passes (the control)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).parent / "lint-imports"


def _lint(copy: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(copy)}
    return subprocess.run([str(LINT)], cwd=copy, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    for package in ("hub", "adapters"):
        shutil.copytree(ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize(("module", "forbidden"), [
    ("hub/messaging/routing.py", "hub.workflows.careplan"),  # messaging reaching up to a flow
    ("hub/store/service.py", "hub.consent.gate"),  # the store importing the consent package
    ("hub/consent/policy.py", "hub.api.deps"),  # the pure policy importing the web
])
def test_a_forbidden_import_breaks_the_layers(copy: Path, module: str, forbidden: str) -> None:
    assert _lint(copy).returncode == 0  # the control: the hub as it is keeps every contract
    path = copy / module
    path.write_text(path.read_text(encoding="utf-8") + f"\nimport {forbidden}  # noqa\n",
                    encoding="utf-8")
    result = _lint(copy)
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout
    assert forbidden in result.stdout
