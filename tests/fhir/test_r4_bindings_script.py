"""scripts/r4_bindings.py on a small package of its own: the ValueSet features R4's required
bindings do not use today (filters, excludes, included value sets) expand as FHIR says, and the
way to each binding follows backbones, choice types and contentReference."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
CS = "http://example.org/cs"


def _script() -> ModuleType:
    """scripts/r4_bindings.py (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("r4_bindings",
                                                  ROOT / "scripts" / "r4_bindings.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _vs(name: str, **compose: Any) -> dict[str, Any]:
    return {"resourceType": "ValueSet", "url": f"http://example.org/vs/{name}",
            "compose": compose}


def _el(path: str, *types: str, vs: str | None = None, ref: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"path": path, "type": [{"code": t} for t in types]}
    if vs is not None:
        out["binding"] = {"strength": "required", "valueSet": f"http://example.org/vs/{vs}|1"}
    if ref is not None:
        out["contentReference"] = ref
    return out


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    package = tmp_path_factory.mktemp("package")
    files: dict[str, Any] = {
        "package.json": {"name": "example.core", "version": "1.0", "license": "CC0-1.0"},
        "CodeSystem-cs.json": {
            "resourceType": "CodeSystem", "url": CS, "content": "complete", "concept": [
                {"code": "a", "concept": [{"code": "a1", "concept": [{"code": "a11"}]}]},
                {"code": "b"}]},
        "CodeSystem-frag.json": {"resourceType": "CodeSystem", "url": "http://example.org/frag",
                                 "content": "fragment", "concept": [{"code": "x"}]},
        "ValueSet-all.json": _vs("all", include=[{"system": CS}]),
        "ValueSet-isa.json": _vs("isa", include=[
            {"system": CS, "filter": [{"property": "concept", "op": "is-a", "value": "a"}]}]),
        "ValueSet-below.json": _vs("below", include=[
            {"system": CS, "filter": [{"property": "concept", "op": "descendent-of",
                                       "value": "a"}]}]),
        "ValueSet-excl.json": _vs("excl", include=[{"system": CS}],
                                  exclude=[{"system": CS, "concept": [{"code": "b"}]}]),
        "ValueSet-both.json": _vs("both", include=[{"valueSet": [
            "http://example.org/vs/isa", "http://example.org/vs/below"]}]),
        "ValueSet-listed.json": _vs("listed", include=[
            {"system": "http://unitsofmeasure.org", "concept": [{"code": "s"}, {"code": "h"}]}]),
        "ValueSet-mime.json": _vs("mime", include=[{"system": "urn:ietf:bcp:13"}]),
        "ValueSet-frag.json": _vs("frag", include=[{"system": "http://example.org/frag"}]),
        "StructureDefinition-Thing.json": {
            "resourceType": "StructureDefinition", "kind": "resource", "type": "Thing",
            "derivation": "specialization", "snapshot": {"element": [
                _el("Thing"),
                _el("Thing.status", "code", vs="all"),
                _el("Thing.part", "BackboneElement"),
                _el("Thing.part.kind", "code", vs="excl"),
                _el("Thing.part.part", ref="#Thing.part"),
                _el("Thing.value[x]", "code", "CodeableConcept", "boolean", vs="isa"),
                _el("Thing.both", "Coding", vs="both"),
                _el("Thing.unit", "code", vs="listed"),
                _el("Thing.below", "code", vs="below"),
                _el("Thing.mime", "code", vs="mime"),
                _el("Thing.frag", "code", vs="frag"),
                _el("Thing.note", "string"),
                _el("Thing.contained", "Resource"),
            ]}},
    }
    for name, data in files.items():
        (package / name).write_text(json.dumps(data), encoding="utf-8")
    built: dict[str, Any] = _script().build(package)
    return built


def test_valuesets_expand_as_fhir_says(table: dict[str, Any]) -> None:
    sets = {url.rsplit("/", 1)[1]: codes for url, codes in table["valueSets"].items()}
    assert sets["all"] == {CS: ["a", "a1", "a11", "b"]}  # nested concepts included
    assert sets["isa"] == {CS: ["a", "a1", "a11"]}
    assert sets["below"] == {CS: ["a1", "a11"]}
    assert sets["excl"] == {CS: ["a", "a1", "a11"]}
    assert sets["both"] == {CS: ["a1", "a11"]}  # several value sets: their intersection
    assert sets["listed"] == {"http://unitsofmeasure.org": ["h", "s"]}  # listed, no system


def test_what_cannot_be_expanded_is_listed_with_its_reason(table: dict[str, Any]) -> None:
    unchecked = table["unexpandable"]
    assert set(unchecked) == {"http://example.org/vs/mime", "http://example.org/vs/frag"}
    assert unchecked["http://example.org/vs/mime"]["elements"] == ["Thing.mime"]
    assert "urn:ietf:bcp:13" in unchecked["http://example.org/vs/mime"]["reason"]
    assert "fragment" in unchecked["http://example.org/vs/frag"]["reason"]
    assert "mime" not in table["nodes"]["Thing"]  # not checked


def test_the_way_to_each_binding(table: dict[str, Any]) -> None:
    thing = table["nodes"]["Thing"]
    assert thing["status"] == {"b": "http://example.org/vs/all", "k": "code"}
    assert thing["valueCode"] == {"b": "http://example.org/vs/isa", "k": "code"}
    assert thing["valueCodeableConcept"] == {"b": "http://example.org/vs/isa",
                                             "k": "CodeableConcept"}
    assert "valueBoolean" not in thing
    assert "note" not in thing
    assert thing["both"]["k"] == "Coding"
    assert thing["part"] == {"n": "Thing.part"}
    assert thing["contained"] == {"n": "*"}
    assert table["nodes"]["Thing.part"] == {
        "kind": {"b": "http://example.org/vs/excl", "k": "code"}, "part": {"n": "Thing.part"}}
    assert table["source"]["package"] == "example.core"


def test_a_required_binding_it_cannot_check_stops_the_script(tmp_path: Path) -> None:
    (tmp_path / "package.json").write_text('{"name": "x", "version": "1", "license": "CC0-1.0"}',
                                           encoding="utf-8")
    sd = {"resourceType": "StructureDefinition", "kind": "resource", "type": "Thing",
          "derivation": "specialization", "snapshot": {"element": [
              _el("Thing"), _el("Thing.label", "string", vs="all")]}}
    (tmp_path / "StructureDefinition-Thing.json").write_text(json.dumps(sd), encoding="utf-8")
    with pytest.raises(SystemExit, match="Thing.label: a required binding on type string"):
        _script().build(tmp_path)
