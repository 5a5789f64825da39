"""Rendering the /ui pages: the Jinja environment (autoescaped, gettext-aware), the language
of each request, and the route class that turns errors into plain pages with strict security
headers."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from starlette.requests import ClientDisconnect
from starlette.responses import RedirectResponse, Response

from hub.db.types import utcnow
from hub.errors import HubError
from hub.ui import i18n
from hub.ui.disclosures import BASES, CONSENT_STATUSES, INNSYN_BASES, INTERACTIONS
from hub.ui.sessions import SignInRequiredError
from hub.ui.transitions import EVENTS

log = logging.getLogger("hub.ui")

SECURITY_HEADERS = {
    "Content-Security-Policy":
        "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'self'; object-src 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).resolve().parent / "templates"),
    autoescape=True, extensions=["jinja2.ext.i18n"])
_ENV.install_gettext_callables(i18n.gettext, i18n.ngettext, newstyle=True)  # type: ignore[attr-defined]


def _moment(at: datetime | None) -> str:
    return i18n.current().moment(at)


def _day(day: Any) -> str:
    return i18n.current().day(day)


def _relative(at: datetime | None) -> str:
    return i18n.current().relative(at, utcnow())


def _capitalize_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def _translated(text: str) -> str:
    """A text that may carry what someone typed (an error's diagnostics), translated where
    the catalogue has it, and escaped like any value: `_()` in a template marks its result
    safe, so it is only for the templates' own texts."""
    return str(i18n.gettext(text))


_ENV.filters.update(moment=_moment, day=_day, relative=_relative,
                    capitalize_first=_capitalize_first, translated=_translated)
_ENV.globals.update(events=EVENTS, interactions=INTERACTIONS, statuses=CONSENT_STATUSES,
                    bases=BASES, innsyn_bases=INNSYN_BASES)
_TEMPLATES = Jinja2Templates(env=_ENV)


def language_of(request: Request) -> i18n.Language:
    """The language the person chose (cookie), in the hub's time zone."""
    zone = getattr(getattr(request.app.state, "settings", None), "timezone", "Europe/Oslo")
    return i18n.Language(i18n.choose(request.cookies.get(i18n.COOKIE)), ZoneInfo(zone))


def render(request: Request, name: str, context: dict[str, Any], *,
           status_code: int = 200, language: str | None = None) -> Response:
    """The template `name` in the request's language (or `language`)."""
    chosen = language_of(request)
    if language is not None:
        chosen = i18n.Language(language, chosen.zone)
    language_ = chosen
    with i18n.rendering_in(language_):
        return _TEMPLATES.TemplateResponse(
            request, name, {**context, "lang": language_, "languages": i18n.LANGUAGES,
                            "here": request.url.path}, status_code=status_code)


def error_page(request: Request, status: int, message: str) -> Response:
    """A plain error page."""
    return render(request, "error.html", {"status": status, "message": message},
                  status_code=status)


def address_error_page(request: Request, status: int, message: str) -> Response:
    """The page for an address under /ui that no page answers (the app's 404 and 405,
    hub/api/exception_handlers.py), with the pages' security headers."""
    page = error_page(request, status, message)
    page.headers.update(SECURITY_HEADERS)
    return page


class UIRoute(APIRoute):
    """A route that answers errors with HTML pages and sets the security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def ui_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except SignInRequiredError:
                response = RedirectResponse("/ui/sign-in", status_code=303)
            except HubError as exc:
                response = error_page(request, exc.status, exc.diagnostics)
            except RequestValidationError:
                response = error_page(request, 400, "The request is malformed.")
            except ClientDisconnect:
                raise  # no one to answer: the app's handler logs it, not as an incident
            except Exception:
                incident = uuid.uuid4()
                log.exception("incident %s on %s %s", incident, request.method,
                              request.url.path)
                response = error_page(
                    request, 500, f"Something went wrong on our side (incident {incident}); "
                    "nothing was changed. The operators have the details.")
            response.headers.update(SECURITY_HEADERS)
            return response

        return ui_handler
