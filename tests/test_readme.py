"""The README is the operator's manual: it must list every setting the hub reads."""

from __future__ import annotations

from pathlib import Path

from hub.config import Settings

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_setting_is_documented_with_its_default() -> None:
    text = README.read_text(encoding="utf-8")
    for name, field in Settings.model_fields.items():
        var = f"HUB_{name.upper()}"
        row = next((line for line in text.splitlines() if line.startswith(f"| `{var}`")), None)
        assert row is not None, f"{var} is missing from the README settings table"
        default = field.default
        shown = str(int(default)) if isinstance(default, float) and default.is_integer() else str(
            default)
        assert f"`{shown}`" in row, f"{var}: README default differs from {shown}"


def test_readme_opens_with_the_two_setup_commands() -> None:
    lines = [ln for ln in README.read_text(encoding="utf-8").splitlines() if ln.strip()]
    block = lines[lines.index("```sh") + 1: lines.index("```sh") + 3]
    assert "hub demo" in block[0]
    assert block[1] == "bash scripts/test.sh"
    assert (README.parent / ".ci" / "run").read_text().count("scripts/test.sh") == 1
