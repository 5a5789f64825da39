"""Telling the story through the public API: real tokens from POST /auth/token (client
assertions signed with the demo keys), then POST /fhir/$process-message for every step.

Every answer is checked: a refused message, a response that is not `ok`, or a destination
queued where the story expects it withheld (or the other way round) stops the demo with the
hub's own words (DemoError).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from hub.demo.keys import DemoClient, token_form
from hub.demo.scenario import Step


class DemoError(Exception):
    """The demo could not tell its story; the message says where and what the hub said."""


class Http(Protocol):
    """What the driver needs of an HTTP client (httpx.Client, or a TestClient on the app)."""

    def post(self, url: str, **kwargs: Any) -> httpx.Response: ...  # noqa: D102


@dataclass
class Told:
    """What the hub did with the story."""

    sent: int = 0
    queued: int = 0
    withheld: int = 0


def _diagnostics(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        return json.dumps(body, ensure_ascii=False, indent=2)
    return json.dumps(body, ensure_ascii=False)[:2000]


class Driver:
    """Posts the story's messages, each with a token of its sender's system."""

    def __init__(self, http: Http, clients: dict[str, DemoClient], token_url: str) -> None:
        self.http = http
        self.clients = clients
        self.token_url = token_url
        self._tokens: dict[str, str] = {}

    def token(self, org_id: str, *, fresh: bool = False) -> str:
        """An access token for the organisation's demo system. Raises DemoError."""
        if fresh or org_id not in self._tokens:
            client = self.clients[org_id]
            r = self.http.post("/auth/token", data=token_form(client, self.token_url),
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
            if r.status_code != 200:
                raise DemoError(f"{client.client_id} got no token ({r.status_code}): {r.text}")
            self._tokens[org_id] = str(r.json()["access_token"])
        return self._tokens[org_id]

    def _post(self, step: Step) -> httpx.Response:
        for fresh in (False, True):  # a token may expire during a long run: one new try
            r = self.http.post("/fhir/$process-message", json=step.bundle, headers={
                "Content-Type": "application/fhir+json",
                "Authorization": f"Bearer {self.token(step.sender, fresh=fresh)}"})
            if r.status_code != 401:
                return r
        return r

    def send(self, step: Step, told: Told) -> None:
        """Post one step and check the answer. Raises DemoError."""
        r = self._post(step)
        where = f"{step.event} message {step.header_id} from Organization/{step.sender}"
        if r.status_code != 200:
            raise DemoError(f"The hub refused the {where} ({r.status_code}):\n"
                            f"{_diagnostics(r)}")
        answer = r.json()
        header = answer["entry"][0]["resource"]
        if header.get("response", {}).get("code") != "ok" or \
                header["response"].get("identifier") != step.header_id:
            raise DemoError(f"The hub's answer to the {where} is not ok:\n{_diagnostics(r)}")
        said = [str(i.get("diagnostics", "")) for i in answer["entry"][1]["resource"]["issue"]]
        for receiver, expected in step.expect.items():
            prefix = (f"Queued for Organization/{receiver}" if expected == "queued"
                      else f"Withheld from Organization/{receiver}")
            if not any(s.startswith(prefix) for s in said):
                raise DemoError(f"The {where} was not {expected} for Organization/{receiver} "
                                f"as the story expects; the hub said:\n  " + "\n  ".join(said))
            told.queued += expected == "queued"
            told.withheld += expected == "withheld"
        told.sent += 1

    def tell(self, steps: Sequence[Step]) -> Told:
        """Post every step in order. Raises DemoError at the first that goes wrong."""
        told = Told()
        for step in steps:
            self.send(step, told)
        return told
