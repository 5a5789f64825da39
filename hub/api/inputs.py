"""What a request's URL may hold: no character a FHIR string may not (hub.fhir.strings).
Checked once for every route, as an app-wide dependency, before any route looks a value up:
a path or query value with U+0000 was a 500 on PostgreSQL wherever it reached a lookup
(search, consent, delivery, the web pages). A search's own parser checks its values too, for
the searches that come in a body, a header or a Bundle entry instead of the URL."""

from __future__ import annotations

from fastapi import Request

from hub.errors import BadRequestError
from hub.fhir.strings import forbidden_character
from hub.store.query import refuse_control_characters


async def check_url(request: Request) -> None:
    """Raise BadRequestError (400) for a path or query parameter holding a control character.
    A coroutine that awaits nothing: FastAPI runs it inline, not on a worker thread."""
    if (found := forbidden_character(request.scope["path"])) is not None:
        raise BadRequestError(f"The request's path holds the control character {found} "
                              f"(%{found[-2:]}); no FHIR id or name holds one.")
    for name, value in request.query_params.multi_items():
        refuse_control_characters(name, value)
