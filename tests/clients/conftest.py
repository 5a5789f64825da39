"""A live hub (uvicorn on a free loopback port) with the examples' two organisations and a
registered SMART Backend Services client of Jæren DPS, for the client-compatibility suite."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from joserfc.jwk import ECKey

from hub.auth.subject import Subject
from hub.db.engine import Database
from hub.fhir.identifiers import FNR_SYSTEM
from hub.orgs.service import add_organization
from tests.auth_helpers import client_assertion, make_es384_key, register, token_form
from tests.messaging.test_story import ORGNR


@dataclass
class LiveHub:
    """The served hub: its base URL, FHIR base, and the DPS system's credentials."""

    url: str
    client_id: str
    key: ECKey

    @property
    def fhir(self) -> str:
        return f"{self.url}/fhir"

    @property
    def token_url(self) -> str:
        return f"{self.url}/auth/token"

    def assertion(self) -> str:
        """A fresh signed client assertion (what the client application makes itself)."""
        return client_assertion(self.key, self.client_id, self.token_url)

    def token(self, scope: str = "system/*.*") -> str:
        """An access token, as any SMART Backend Services client gets one."""
        r = httpx.post(self.token_url, data=token_form(self.assertion(), scope))
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])


@pytest.fixture
def live_hub(live_url: str, database: Database) -> LiveHub:
    with database.session(write=True) as s:
        add_organization(s, Subject.hub_itself(), name="Jæren DPS",
                         kind="mental-health-centre", identifier=f"{ORGNR}|983974791",
                         org_id="jaeren-dps")
        add_organization(s, Subject.hub_itself(), name="Time kommune", kind="municipality",
                         identifier=f"{ORGNR}|964969590", org_id="time-kommune")
    key, jwks = make_es384_key(f"dps-{uuid.uuid4().hex[:8]}")
    client_id = register(database, org_id="jaeren-dps", jwks=jwks, name="DPS EHR")
    return LiveHub(live_url, client_id, key)


def patient_json(number: str, family: str = "Nordmann", given: str = "Kari") -> dict[str, Any]:
    """A plain Patient identified by fødselsnummer."""
    return {"resourceType": "Patient",
            "identifier": [{"system": FNR_SYSTEM, "value": number}],
            "name": [{"family": family, "given": [given]}], "gender": "female",
            "birthDate": "1969-11-13"}


def transaction_of(*resources: dict[str, Any]) -> dict[str, Any]:
    """A transaction Bundle creating `resources`, the first referenced by the others."""
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": r,
         "request": {"method": "POST", "url": r["resourceType"]}} for r in resources]}


Maker = Callable[..., dict[str, Any]]
