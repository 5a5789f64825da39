"""The web server's access log keeps no personal identity numbers.

Search URLs carry fødselsnummer and D-nummer (`Patient?identifier=urn:oid:...|13116900216`,
`Encounter?patient.identifier=...`); uvicorn writes each request line to its access log,
which is not the audit trail and is kept and shipped with far less care. The filter here
masks every run of exactly 11 digits (how both numbers are written) in the logged path,
also URL-encoded (`%7C13116900216`), before any handler sees the record.
"""

from __future__ import annotations

import logging
import re

ACCESS_LOGGER = "uvicorn.access"
_ELEVEN_DIGITS = re.compile(r"(?<![0-9])[0-9]{11}(?![0-9])")
MASK = "***********"


def mask(text: str) -> str:
    """`text` with every 11-digit number (fødselsnummer, D-nummer) masked."""
    return _ELEVEN_DIGITS.sub(MASK, text)


class IdentityNumberFilter(logging.Filter):
    """Masks 11-digit numbers in an access-log record's arguments and message."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(mask(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = mask(record.msg)
        return True


def install() -> None:
    """Put the filter on uvicorn's access logger (once per process; uvicorn's logging
    configuration keeps a logger's filters)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, IdentityNumberFilter) for f in logger.filters):
        logger.addFilter(IdentityNumberFilter())
