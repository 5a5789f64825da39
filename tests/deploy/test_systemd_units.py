"""deploy/systemd: the units an operator installs, checked as systemd reads them.

deploy/up.sh runs the same roles as plain processes, so nothing else would notice a unit that
systemd reads differently than meant: a misspelt key or value is only a warning in the
journal and the unit runs without it (a hardening line, a restart policy). Each unit is read
by `systemd-analyze verify` with its /opt/carehub paths pointed at this checkout; every
command a unit starts is one the hub's command line takes; carehub.target pulls in each role
up.sh starts.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
ANALYZE = shutil.which("systemd-analyze")
HUB = ROOT / ".venv" / "bin" / "hub"

if ANALYZE is None:
    if os.environ.get("CI"):
        raise RuntimeError("systemd-analyze is missing under CI (scripts/test.sh installs it)")
    pytest.skip("systemd-analyze is not installed", allow_module_level=True)


def _here(text: str) -> str:
    """A unit's text with the installed paths (/opt/carehub) pointed at this checkout."""
    return (text.replace("/opt/carehub/.venv/bin/hub", str(HUB))
            .replace("/opt/carehub/deploy/", f"{ROOT}/deploy/"))


def _verify(directory: Path) -> str:
    """What `systemd-analyze verify` says of every unit in `directory` (nothing when all is
    well: it exits 0 on most mistakes, naming them on stderr)."""
    assert ANALYZE is not None
    units = sorted(str(p) for p in directory.iterdir())
    done = subprocess.run([ANALYZE, "verify", "--man=no", *units], capture_output=True,
                          text=True, timeout=120, check=False)
    return (done.stdout + done.stderr).strip() + ("" if done.returncode == 0
                                                  else f"\n(exit {done.returncode})")


def _copy(tmp_path: Path) -> Path:
    out = tmp_path / "units"
    out.mkdir()
    for unit in UNITS.iterdir():
        (out / unit.name).write_text(_here(unit.read_text()))
    return out


def test_systemd_reads_every_unit_without_a_complaint(tmp_path: Path) -> None:
    assert _verify(_copy(tmp_path)) == ""


@pytest.mark.parametrize(("unit", "edit", "named"), [
    ("carehub-sealer.service", ("Restart=on-failure", "Restart=sometimes"),
     "Failed to parse service restart specifier"),
    ("carehub-api@.service", ("ProtectSystem=strict", "ProtectSytem=strict"),
     "Unknown key 'ProtectSytem'"),
])
def test_a_misspelt_unit_is_named(tmp_path: Path, unit: str, edit: tuple[str, str],
                                  named: str) -> None:
    """The control: the check above sees what systemd would only log and ignore."""
    units = _copy(tmp_path)
    path = units / unit
    assert edit[0] in path.read_text()
    path.write_text(path.read_text().replace(edit[0], edit[1]))
    assert named in _verify(units)


def _commands() -> list[tuple[str, list[str]]]:
    """(unit, hub arguments) of every ExecStart/ExecStartPre that runs the hub; %i is a port."""
    found = []
    for unit in sorted(UNITS.glob("*.service")):
        for line in unit.read_text().splitlines():
            m = re.match(r"ExecStart(?:Pre)?=(\S+)\s*(.*)", line)
            if m and m.group(1) == "/opt/carehub/.venv/bin/hub":
                found.append((unit.name, shlex.split(m.group(2).replace("%i", "8081"))))
    return found


def test_every_hub_command_a_unit_runs_is_one_the_hub_takes() -> None:
    commands = _commands()
    roles = {a[a.index("--roles") + 1] for _, a in commands if "--roles" in a}
    assert roles == {"api", "dispatcher", "scheduler", "sealer"}
    assert any(a[0] == "mllp" for _, a in commands)
    for unit, args in commands:
        # --help after the arguments: the command and its options are parsed (an unknown
        # one fails) and nothing runs
        done = subprocess.run([str(HUB), *args, "--help"], capture_output=True, text=True,
                              timeout=60, check=False)
        assert done.returncode == 0, f"{unit}: hub {' '.join(args)}: {done.stderr}"


def test_a_command_the_hub_does_not_take_is_named() -> None:
    """The control for the check above: an option the hub does not have fails it."""
    done = subprocess.run([str(HUB), "serve", "--role", "api", "--help"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "No such option" in done.stderr


def test_the_target_starts_each_role_up_sh_starts() -> None:
    wants = next(line for line in (UNITS / "carehub.target").read_text().splitlines()
                 if line.startswith("Wants="))
    names = wants.removeprefix("Wants=").split()
    for name in names:  # each exists, as a unit or an instance of a template
        template = re.sub(r"@[^.]+\.", "@.", name)
        assert (UNITS / template).exists(), name
    assert sum(n.startswith("carehub-api@") for n in names) == 2
    assert sum(n.startswith("carehub-api-writes@") for n in names) == 2
    assert {"carehub-dispatcher.service", "carehub-scheduler.service",
            "carehub-sealer.service"} <= set(names)
