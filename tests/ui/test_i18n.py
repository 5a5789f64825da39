"""The languages of /ui: bokmål by default, English on request, the catalogues complete and
compiled, times in HUB_TIMEZONE."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from zoneinfo import ZoneInfo

import pytest
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from hub.ui import i18n
from hub.ui.pages import _ENV
from tests.ui.conftest import Browser

ROOT = Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("i18n_script", ROOT / "scripts" / "i18n.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("language", sorted(i18n.LANGUAGES))
def test_each_compiled_catalogue_is_its_po_file(language: str) -> None:
    folder = i18n.LOCALE_DIR / language / "LC_MESSAGES"
    po = read_po((folder / "messages.po").open("rb"))
    mo = read_mo((folder / "messages.mo").open("rb"))
    def plain(text: object) -> object:
        return tuple(text) if isinstance(text, list | tuple) else text

    def translated(message: object) -> bool:
        string = plain(getattr(message, "string", ""))
        parts = string if isinstance(string, tuple) else (string,)
        return bool(getattr(message, "id", "")) and all(parts) and string != plain(
            getattr(message, "id", ""))

    wanted = {plain(m.id): plain(m.string) for m in po if translated(m)}
    compiled = {plain(m.id): plain(m.string) for m in mo if translated(m)}
    assert compiled == wanted, "run .venv/bin/python scripts/i18n.py and commit the .mo"


def test_every_marked_text_has_a_bokmal_translation() -> None:
    template = _script().extract()
    po = read_po((i18n.LOCALE_DIR / "nb" / "LC_MESSAGES" / "messages.po").open("rb"))
    missing = [m.id for m in template if m.id and not (po.get(m.id) and po.get(m.id).string)]
    assert missing == []


def test_times_are_shown_in_the_hubs_time_zone() -> None:
    at = datetime(2026, 7, 1, 22, 30, tzinfo=UTC)
    assert i18n.Language("nb", ZoneInfo("Europe/Oslo")).moment(at) == "02.07.2026 00:30"
    assert i18n.Language("en", ZoneInfo("UTC")).moment(at) == "01.07.2026 22:30"
    assert i18n.Language("nb", ZoneInfo("Europe/Oslo")).day(at) == "2. juli 2026"
    assert i18n.Language("en", ZoneInfo("Europe/Oslo")).day("2026-07-02") == "2 July 2026"


def test_the_sign_in_page_is_in_bokmal_until_english_is_chosen(browser: Browser) -> None:
    client = browser(lang=None)
    page = client.get("/ui/sign-in")
    assert '<html lang="nb">' in page.text
    assert ">Logg inn</h1>" in page.text
    assert "Brukernavn" in page.text
    chosen = client.get("/ui/language", params={"lang": "en", "back": "/ui/sign-in"})
    assert chosen.status_code == 303
    assert chosen.headers["location"] == "/ui/sign-in"
    english = client.get("/ui/sign-in")
    assert '<html lang="en">' in english.text
    assert ">Sign in</h1>" in english.text


def test_the_language_switch_goes_back_only_within_the_ui(browser: Browser) -> None:
    client = browser(lang=None)
    for back in ("//evil.example/ui", "https://evil.example/", "/fhir/Patient"):
        answer = client.get("/ui/language", params={"lang": "en", "back": back})
        assert answer.headers["location"] == "/ui"
    ignored = client.get("/ui/language", params={"lang": "xx"})
    assert "set-cookie" not in ignored.headers


def test_a_translated_message_is_still_escaped() -> None:
    """An error's diagnostics may carry what someone typed: the `translated` filter
    translates it and leaves it to autoescape, where `_()` would mark it safe."""
    page = _ENV.from_string("{{ m|translated }}").render(m="<script>alert(1)</script>")
    assert page == "&lt;script&gt;alert(1)&lt;/script&gt;"
