"""The access log of a real uvicorn server never holds a fødselsnummer or D-nummer."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from hub.api.accesslog import ACCESS_LOGGER
from hub.app import create_app
from hub.cli import HTTP, LOOP
from hub.config import Settings
from hub.fhir.identifiers import FNR_SYSTEM
from tests.conftest import _free_port
from tests.factories import fnr


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def logged_server(settings: Settings) -> Iterator[tuple[str, _Keep]]:
    port = _free_port()
    live = settings.model_copy(update={"base_url": f"http://127.0.0.1:{port}"})
    server = uvicorn.Server(uvicorn.Config(create_app(live), host="127.0.0.1", port=port,
                                           log_level="info", access_log=True, loop=LOOP, http=HTTP))
    keep = _Keep()
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        assert thread.is_alive(), "server did not start"
        time.sleep(0.02)
    logging.getLogger(ACCESS_LOGGER).addHandler(keep)  # after uvicorn configured its logging
    yield f"http://127.0.0.1:{port}", keep
    logging.getLogger(ACCESS_LOGGER).removeHandler(keep)
    server.should_exit = True
    thread.join(10)


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
