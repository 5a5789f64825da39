"""Refresh the /ui catalogues: extract the marked texts of hub/ui, merge them into
hub/ui/locale/{nb,en}/LC_MESSAGES/messages.po (bokmål texts from scripts/nb_translations.py
fill what the .po lacks), and compile each .po to the messages.mo the hub reads.

Run: .venv/bin/python scripts/i18n.py   (then commit the .po and .mo files)
"""

from __future__ import annotations

import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
LOCALE = ROOT / "hub" / "ui" / "locale"
METHODS = [("**/templates/**.html", "jinja2.ext:babel_extract"), ("**.py", "python")]
OPTIONS = {"**/templates/**.html": {"extensions": "jinja2.ext.i18n"}}


def extract() -> Catalog:
    """The texts marked in hub/ui (gettext, ngettext, _, N_)."""
    template = Catalog(project="CareHub")
    keywords = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None}
    for _file, _line, message, _comments, _context in extract_from_dir(
            str(ROOT / "hub" / "ui"), METHODS, keywords=keywords, options_map=OPTIONS):
        template.add(message)
    return template


def refresh(language: str, template: Catalog) -> Catalog:
    """The language's catalogue with every text of `template`, translations kept."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from nb_translations import NB, PLURALS

    path = LOCALE / language / "LC_MESSAGES" / "messages.po"
    old = read_po(path.open("rb"), locale=language) if path.exists() else None
    catalog = Catalog(locale=language, project="CareHub")
    for message in template:
        if not message.id:
            continue
        kept = old.get(message.id) if old is not None else None
        text: str | tuple[str, ...] | None = kept.string if kept is not None and kept.string \
            else None
        if text is None and language == "nb":
            text = PLURALS.get(message.id) if isinstance(message.id, tuple) \
                else NB.get(message.id)
        catalog.add(message.id, text or ("" if not isinstance(message.id, tuple)
                                         else ("", "")))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        write_po(out, catalog, omit_header=False, sort_output=True, width=100)
    with path.with_suffix(".mo").open("wb") as out:
        write_mo(out, catalog)
    return catalog


def main() -> int:
    template = extract()
    missing = [m.id for m in refresh("nb", template) if m.id and not m.string]
    refresh("en", template)
    for text in missing:
        sys.stderr.write(f"no bokmål text for: {text!r}\n")
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
