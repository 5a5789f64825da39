"""The access log of a real uvicorn server never holds a fødselsnummer or D-nummer."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest

from hub.api.accesslog import ACCESS_LOGGER
from hub.config import Settings
from hub.fhir.identifiers import FNR_SYSTEM
from tests.conftest import serving
from tests.factories import fnr


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def logged_server(settings: Settings) -> Iterator[tuple[str, _Keep]]:
    keep = _Keep()
    with serving(settings, log_level="info", access_log=True) as url:
        logging.getLogger(ACCESS_LOGGER).addHandler(keep)  # after uvicorn set up its logging
        try:
            yield url, keep
        finally:
            logging.getLogger(ACCESS_LOGGER).removeHandler(keep)


def test_identity_numbers_are_masked_in_the_access_log(
        logged_server: tuple[str, _Keep], bearer: str) -> None:
    url, keep = logged_server
    number = fnr()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {bearer}"}) as http:
        http.get("/fhir/Patient", params={"identifier": f"{FNR_SYSTEM}|{number}"})
        http.get(f"/fhir/Encounter?patient.identifier={number}&_count=12345678901234")
    logged = "\n".join(keep.lines)
    assert "/fhir/Patient?identifier=" in logged
    assert "/fhir/Encounter?patient.identifier=" in logged
    assert number not in logged
    assert "12345678901234" in logged  # only 11-digit numbers are masked
