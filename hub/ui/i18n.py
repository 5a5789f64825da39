"""The languages of /ui: bokmål (the default) and English, from gettext catalogues.

Templates and the few page texts built in Python are written in English and marked for
translation (`_()` / `{% trans %}` in templates, `N_()` in Python for texts translated when
shown); `hub/ui/locale/<lang>/LC_MESSAGES/messages.po` holds the translations and the
compiled `messages.mo` beside it is what is read (regenerate with `pybabel compile -d
hub/ui/locale`; tests/ui/test_i18n.py fails when a .mo lags its .po). Each person chooses a
language with the `carehub_lang` cookie (the language switch in the page header sets it).
Times are shown in HUB_TIMEZONE, formatted by Babel for the chosen language.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_datetime, format_timedelta
from babel.support import NullTranslations, Translations

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
LANGUAGES = {"nb": "Norsk (bokmål)", "en": "English"}
DEFAULT = "nb"
COOKIE = "carehub_lang"


def N_(text: str) -> str:  # noqa: N802 (gettext's name for "mark, translate later")
    """Mark `text` for the catalogue; it is translated where it is shown."""
    return text


SIGN_IN_FAILED = N_("Wrong username or password, or the account is paused.")
"""hub.auth.users.SIGN_IN_FAILED, for the catalogue."""
ROLES = (N_("coordinator"), N_("auditor"), N_("admin"))


@cache
def translations(language: str) -> NullTranslations:
    """The compiled catalogue of `language` (English: the texts as written)."""
    return Translations.load(str(LOCALE_DIR), [language], domain="messages")


def choose(cookie: str | None) -> str:
    """The language a request asked for with its cookie, else the default (bokmål)."""
    return cookie if cookie in LANGUAGES else DEFAULT


@dataclass(frozen=True)
class Language:
    """The language and time zone one page is rendered in."""

    code: str
    zone: ZoneInfo

    @property
    def babel_locale(self) -> str:
        """Babel's name of the locale."""
        return "nb_NO" if self.code == "nb" else "en_GB"

    def gettext(self, text: str) -> str:
        """`text` in this language."""
        return translations(self.code).ugettext(text)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        """The singular or plural of a text in this language."""
        return translations(self.code).ungettext(singular, plural, n)

    def local(self, at: datetime) -> datetime:
        """`at` in HUB_TIMEZONE."""
        aware = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
        return aware.astimezone(self.zone)

    def moment(self, at: datetime | None) -> str:
        """A moment as people here read it: 13.11.2026 14:05 (local time)."""
        if at is None:
            return ""
        return format_datetime(self.local(at), "dd.MM.yyyy HH:mm", locale=self.babel_locale)

    def day(self, day: date | datetime | str | None) -> str:
        """A calendar day: 13. november 2026 / 13 November 2026 (a FHIR date string as it is
        when it is not a whole date)."""
        if not day:
            return ""
        if isinstance(day, str):
            try:
                whole = date.fromisoformat(day[:10])
            except ValueError:
                return day
        elif isinstance(day, datetime):
            whole = self.local(day).date()
        else:
            whole = day
        return format_date(whole, "long", locale=self.babel_locale)

    def relative(self, at: datetime | None, now: datetime) -> str:
        """How far `at` is from `now`: "om 3 dager", "2 hours ago"."""
        if at is None:
            return ""
        delta = at - now
        if abs(delta) < timedelta(hours=1):
            return self.gettext("within the hour")
        return format_timedelta(delta, granularity="hour", threshold=1.0, add_direction=True,
                                locale=self.babel_locale)


_CURRENT: ContextVar[Language | None] = ContextVar("carehub_language", default=None)


@contextmanager
def rendering_in(language: Language) -> Iterator[None]:
    """Render templates in `language` inside this block."""
    token = _CURRENT.set(language)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current() -> Language:
    """The language of the page being rendered (bokmål in Oslo time outside a page)."""
    return _CURRENT.get() or Language(DEFAULT, ZoneInfo("Europe/Oslo"))


def gettext(text: str) -> str:
    """`text` in the current page's language (for the templates)."""
    return current().gettext(text)


def ngettext(singular: str, plural: str, n: int) -> str:
    """The singular or plural in the current page's language (for the templates)."""
    return current().ngettext(singular, plural, n)
