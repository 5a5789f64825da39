"""Derive fhir_profiles/r4/required-bindings.json from the official FHIR R4 core package.

    python scripts/r4_bindings.py PACKAGE_DIR [--out fhir_profiles/r4/required-bindings.json]

PACKAGE_DIR is the `package/` folder of hl7.fhir.r4.core 4.0.1 (fhir_profiles/r4/README.md
says where it comes from). Nothing in the table is typed by hand; it holds:

- `nodes`: for each base type (resource or datatype, from the StructureDefinitions with no
  base or derivation `specialization`) and each of its backbone elements, the JSON names of
  the children that carry a `required` binding or lead to one: `{"b": value set url,
  "k": "code" | "Coding" | "CodeableConcept"}` for a bound element, `{"n": node}` to descend
  (a datatype, a backbone path, or "*" for a resource judged by its own resourceType). Choice
  elements are spelled out (`valueCodeableConcept`); `contentReference` points at its node.
- `valueSets`: for each required ValueSet, its codes by system, expanded from its `compose`
  (whole code systems with nested concepts, concept lists, `is-a` / `descendent-of`
  filters, included value sets, excludes).
- `unexpandable`: the required ValueSets the package cannot expand (their codes come from a
  code system it does not define, e.g. MIME types or UCUM), why, and the elements bound to
  them. Those elements are not checked.
- `source`: the package name and version and the sha256 of every input file combined.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

JSON = dict[str, Any]
BOUND_TYPES = ("code", "Coding", "CodeableConcept")
UNHANDLED_BINDABLE = ("string", "uri", "Quantity", "CodeableReference")
"""Types a binding may apply to that the check does not handle: the script stops on one (R4
binds none of them `required`). Other types of a choice element carry no binding."""
OUT = Path(__file__).resolve().parent.parent / "fhir_profiles" / "r4" / "required-bindings.json"


class UnexpandableError(Exception):
    """A ValueSet whose codes the package cannot list; the message says why."""


def _load(directory: Path, prefix: str) -> list[tuple[Path, JSON]]:
    return [(p, json.loads(p.read_text(encoding="utf-8")))
            for p in sorted(directory.glob(f"{prefix}-*.json"))]


def _canonical(url: str) -> str:
    return url.split("|", 1)[0]


class Terminology:
    """The package's CodeSystems and ValueSets, and ValueSet expansion from `compose`."""

    def __init__(self, code_systems: list[JSON], value_sets: list[JSON]) -> None:
        self.code_systems = {c["url"]: c for c in code_systems}
        self.value_sets = {v["url"]: v for v in value_sets}

    def _concepts(self, system: str) -> list[JSON]:
        cs = self.code_systems.get(system)
        if cs is None:
            raise UnexpandableError(f"its codes come from {system}, a code system the R4 package "
                               "does not define")
        if cs.get("content") != "complete":
            raise UnexpandableError(f"the package holds the code system {system} only as "
                               f"'{cs.get('content')}'")
        return list(cs.get("concept") or [])

    @staticmethod
    def _all_codes(concepts: list[JSON]) -> set[str]:
        out: set[str] = set()
        for c in concepts:
            out.add(c["code"])
            out |= Terminology._all_codes(c.get("concept") or [])
        return out

    @staticmethod
    def _find(concepts: list[JSON], code: str) -> JSON | None:
        for c in concepts:
            if c["code"] == code:
                return c
            found = Terminology._find(c.get("concept") or [], code)
            if found is not None:
                return found
        return None

    def _filtered(self, system: str, filters: list[JSON]) -> set[str]:
        concepts = self._concepts(system)
        codes = self._all_codes(concepts)
        for f in filters:
            prop, op, value = f.get("property"), f.get("op"), f.get("value")
            if prop != "concept" or op not in ("is-a", "descendent-of"):
                raise UnexpandableError(f"it filters {system} by '{prop} {op} {value}', which this "
                                   "script does not expand")
            root = self._find(concepts, str(value))
            if root is None:
                raise UnexpandableError(f"its filter names '{value}', which {system} "
                                        "does not define")
            below = self._all_codes(root.get("concept") or [])
            codes &= below | {root["code"]} if op == "is-a" else below
        return codes

    def _selection(self, part: JSON, seen: tuple[str, ...]) -> dict[str, set[str]]:
        """The codes one `include` or `exclude` selects, by system."""
        picked: dict[str, set[str]] | None = None
        system = part.get("system")
        if system is not None:
            if part.get("concept"):
                codes = {c["code"] for c in part["concept"]}
            elif part.get("filter"):
                codes = self._filtered(system, part["filter"])
            else:
                codes = self._all_codes(self._concepts(system))
            picked = {system: codes}
        for url in part.get("valueSet") or []:  # several value sets: their intersection
            other = self.expand(url, seen)
            picked = other if picked is None else {
                s: picked[s] & other[s] for s in picked.keys() & other.keys()}
        if picked is None:
            raise UnexpandableError("an include names neither a system nor a value set")
        return picked

    def expand(self, url: str, seen: tuple[str, ...] = ()) -> dict[str, set[str]]:
        """Every code of the ValueSet `url`, by system; raises UnexpandableError."""
        url = _canonical(url)
        if url in seen:
            raise UnexpandableError(f"it includes itself through {' > '.join(seen)}")
        vs = self.value_sets.get(url)
        if vs is None:
            raise UnexpandableError("the ValueSet is not in the R4 package")
        compose = vs.get("compose") or {}
        if not compose.get("include"):
            raise UnexpandableError("the ValueSet has no compose to expand")
        out: dict[str, set[str]] = {}
        for part in compose["include"]:
            for system, codes in self._selection(part, (*seen, url)).items():
                out.setdefault(system, set()).update(codes)
        for part in compose.get("exclude") or []:
            for system, codes in self._selection(part, (*seen, url)).items():
                out[system] = out.get(system, set()) - codes
        return {s: c for s, c in out.items() if c}


def _json_name(element_name: str, type_code: str) -> str:
    base = element_name[:-3]
    return base + type_code[0].upper() + type_code[1:]


def _base_definitions(structure_definitions: list[JSON]) -> dict[str, JSON]:
    """The base types by name: resources and datatypes with no base or `specialization`."""
    out = {}
    for sd in structure_definitions:
        if sd.get("kind") == "logical" or "snapshot" not in sd:
            continue
        if sd.get("derivation", "specialization") != "specialization":
            continue
        out[sd["type"]] = sd
    return out


def build(package: Path) -> JSON:
    """The binding table of the package in `package` (see the module docstring)."""
    inputs: list[Path] = []
    sds = _load(package, "StructureDefinition")
    vss = _load(package, "ValueSet")
    css = _load(package, "CodeSystem")
    inputs = [p for p, _ in sds + vss + css] + [package / "package.json"]
    meta = json.loads((package / "package.json").read_text(encoding="utf-8"))
    terminology = Terminology([c for _, c in css], [v for _, v in vss])
    bases = _base_definitions([s for _, s in sds])

    # every node: {json name: entry}, entries before pruning
    nodes: dict[str, dict[str, JSON]] = {}
    bound: dict[str, list[str]] = {}  # value set -> element paths
    for type_name, sd in sorted(bases.items()):
        elements = sd["snapshot"]["element"]
        paths = {e["path"] for e in elements}
        for e in elements:
            path: str = e["path"]
            if "." not in path:
                nodes.setdefault(type_name, {})
                continue
            parent, name = path.rsplit(".", 1)
            node = type_name if parent == type_name else parent
            children = nodes.setdefault(node, {})
            binding = e.get("binding") or {}
            required = binding.get("strength") == "required" and binding.get("valueSet")
            types = [t["code"] for t in e.get("type") or []]
            if e.get("contentReference"):
                target = e["contentReference"].lstrip("#")
                children[name] = {"n": target}
                continue
            for code in types:
                key = _json_name(name, code) if name.endswith("[x]") else name
                entry: JSON = {}
                if required and code in BOUND_TYPES:
                    entry["b"] = _canonical(binding["valueSet"])
                    entry["k"] = code
                    bound.setdefault(entry["b"], []).append(path)
                elif required and code in UNHANDLED_BINDABLE:
                    sys.exit(f"{path}: a required binding on type {code} is not handled")
                if any(p.startswith(path + ".") for p in paths):
                    entry["n"] = path  # a backbone element with children of its own
                elif code == "Resource":
                    entry["n"] = "*"
                elif code in bases and bases[code]["kind"] == "complex-type":
                    entry["n"] = code  # (a primitive's extensions sit beside it, in `_name`)
                if entry:
                    children[key] = entry

    # prune: keep what carries a binding or leads to one (recursion through a fixpoint)
    reaches = {n for n, ch in nodes.items() if any("b" in e for e in ch.values())}
    resources = {t for t, sd in bases.items() if sd["kind"] == "resource"}
    changed = True
    while changed:
        changed = False
        for node, children in nodes.items():
            if node in reaches:
                continue
            for e in children.values():
                target = e.get("n")
                if target in reaches or (target == "*" and reaches & resources):
                    reaches.add(node)
                    changed = True
                    break
    pruned: dict[str, dict[str, JSON]] = {}
    for node in sorted(reaches):
        kept = {}
        for key, e in sorted(nodes[node].items()):
            entry = dict(e)
            if entry.get("n") not in reaches and entry.get("n") != "*":
                entry.pop("n", None)
            if entry:
                kept[key] = entry
        pruned[node] = kept

    value_sets: dict[str, dict[str, list[str]]] = {}
    unexpandable: dict[str, JSON] = {}
    for url in sorted(bound):
        try:
            expanded = terminology.expand(url)
        except UnexpandableError as why:
            unexpandable[url] = {"reason": str(why), "elements": sorted(bound[url])}
            continue
        value_sets[url] = {s: sorted(c) for s, c in sorted(expanded.items())}
    for children in pruned.values():  # an unexpandable binding is not checked
        for key in [k for k, e in children.items() if e.get("b") in unexpandable]:
            entry = {k: v for k, v in children[key].items() if k not in ("b", "k")}
            if entry:
                children[key] = entry
            else:
                del children[key]

    digest = hashlib.sha256()
    for p in sorted(inputs):
        digest.update(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n".encode())
    return {
        "source": {
            "package": meta["name"], "version": meta["version"], "license": meta["license"],
            "generator": "scripts/r4_bindings.py",
            "inputs": len(inputs),
            "inputs_sha256": digest.hexdigest(),
        },
        "unexpandable": unexpandable,
        "valueSets": value_sets,
        "nodes": pruned,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("package", type=Path, help="the package/ folder of hl7.fhir.r4.core")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    table = build(args.package)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(table, indent=0, sort_keys=True, ensure_ascii=False) + "\n",
                        encoding="utf-8")
    print(f"{args.out}: {len(table['nodes'])} nodes, {len(table['valueSets'])} value sets, "  # noqa: T201
          f"{len(table['unexpandable'])} unexpandable")


if __name__ == "__main__":
    main()
