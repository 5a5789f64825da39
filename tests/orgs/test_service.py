"""Registering organisations: Organization + Endpoint resources, unique identifiers."""

from __future__ import annotations

import pytest

from hub.auth.subject import Subject
from hub.db.engine import Database
from hub.errors import BadRequestError, ConflictError
from hub.orgs.service import add_organization, list_organizations, set_organization_active
from hub.store import service

HUB = Subject.hub_itself()
ORGNR = "urn:oid:2.16.578.1.12.4.1.4.101"


def test_add_with_endpoint_makes_both_resources(database: Database) -> None:
    with database.session(write=True) as s:
        org_id = add_organization(s, HUB, name="Time kommune", kind="municipality",
                                  identifier=f"{ORGNR}|964969590",
                                  endpoint="https://time.example/fhir", org_id="time-kommune")
    assert org_id == "time-kommune"
    with database.session(write=False) as s:
        org = service.read(s, HUB, resource_type="Organization", resource_id=org_id).body
        assert org is not None
        assert org["identifier"] == [{"system": ORGNR, "value": "964969590"}]
        assert org["type"][0]["coding"][0]["code"] == "municipality"
        endpoint_id = org["endpoint"][0]["reference"].split("/")[1]
        ep = service.read(s, HUB, resource_type="Endpoint", resource_id=endpoint_id).body
        assert ep is not None
        assert ep["address"] == "https://time.example/fhir"
        assert ep["connectionType"]["code"] == "hl7-fhir-msg"
        assert ep["status"] == "active"


def test_duplicate_id_or_identifier_is_refused(database: Database) -> None:
    with database.session(write=True) as s:
        add_organization(s, HUB, name="A", kind="municipality", identifier=f"{ORGNR}|1",
                         org_id="a")
    with pytest.raises(ConflictError), database.session(write=True) as s:
        add_organization(s, HUB, name="B", kind="municipality", identifier=f"{ORGNR}|1")
    with pytest.raises(ConflictError), database.session(write=True) as s:
        add_organization(s, HUB, name="C", kind="municipality", identifier=f"{ORGNR}|2",
                         org_id="a")
    with database.session(write=False) as s:
        assert [o.id for o in list_organizations(s, HUB)] == ["a"]


@pytest.mark.parametrize(("kind", "identifier", "endpoint"), [
    ("shop", f"{ORGNR}|1", None),
    ("municipality", "no-bar", None),
    ("municipality", f"{ORGNR}|1", "ftp://x"),
])
def test_bad_input_is_refused(database: Database, kind: str, identifier: str,
                              endpoint: str | None) -> None:
    with pytest.raises(BadRequestError), database.session(write=True) as s:
        add_organization(s, HUB, name="X", kind=kind, identifier=identifier, endpoint=endpoint)


def test_disable_makes_a_new_version(database: Database) -> None:
    with database.session(write=True) as s:
        add_organization(s, HUB, name="A", kind="other", identifier=f"{ORGNR}|1", org_id="a")
        set_organization_active(s, HUB, "a", False)
    with database.session(write=False) as s:
        org = service.read(s, HUB, resource_type="Organization", resource_id="a")
        assert org.version_id == 2
        assert org.body is not None
        assert org.body["active"] is False
