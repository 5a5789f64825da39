"""Channels in `hub serve`: HUB_MLLP_PORT starts the MLLP listener with the app, and a
process that cannot take that port starts nothing else."""

from __future__ import annotations

import socket

import pytest
from fastapi.testclient import TestClient

from adapters.mllp.simulator import Pas, adt
from hub.app import create_app
from hub.config import Settings
from hub.db.engine import Database
from tests.adapters.mllp.acks import read
from tests.adapters.mllp.conftest import register, stay
from tests.delivery.receivers import free_port


def test_hub_serve_takes_mllp_on_hub_mllp_port(settings: Settings, database: Database) -> None:
    register(database)
    port = free_port()
    with TestClient(create_app(settings.model_copy(update={"mllp_port": port}))), \
            Pas("127.0.0.1", port, attempts=1) as pas:
        assert read(pas.send(adt(stay(), "A01", "SERVE-1"))).code == "AA"


def test_a_taken_mllp_port_stops_the_app_from_starting(settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = create_app(settings.model_copy(update={"mllp_port": port,
                                                     "dispatcher": True}))
        with pytest.raises(OSError, match="address already in use"), TestClient(app):
            pass
