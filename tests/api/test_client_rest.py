"""What standard FHIR clients rely on (CONTRACT section 2): `_count=0` and totals, `_summary`
and `_elements`, 405 with Allow, HTTP-date Last-Modified, 406 for XML, conditional create by
the POST URL's query, the CapabilityStatement's security, chained search."""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi.testclient import TestClient

from hub.fhir import jsonio
from tests.factories import fnr, patient

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
             "code": "SUBSETTED", "display": "subsetted"}


def _post(client: TestClient, resource: dict[str, Any]) -> str:
    r = client.post(f"/fhir/{resource['resourceType']}", json=resource)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _three_patients(client: TestClient) -> list[str]:
    return [_post(client, patient(fnr(date(1970 + i, 1, 2)), family=f"Hansen{i}"))
            for i in range(3)]


def _links(bundle: dict[str, Any]) -> dict[str, str]:
    return {link["relation"]: link["url"] for link in bundle.get("link", [])}


def test_count_zero_gives_the_total_and_no_next_link(client: TestClient) -> None:
    _three_patients(client)
    body = client.get("/fhir/Patient?_count=0").json()
    assert [e for e in body["entry"] if e["search"]["mode"] == "match"] == []
    assert "next" not in _links(body)
    assert body["total"] == 3
    # what fhirpy's count() sends
    body = client.get("/fhir/Patient?_count=0&_totalMethod=count").json()
    assert body["total"] == 3
    assert "next" not in _links(body)
    assert all(e["search"]["mode"] != "outcome" for e in body["entry"])


def test_summary_count_and_total_accurate_give_the_total(client: TestClient) -> None:
    _three_patients(client)
    body = client.get("/fhir/Patient?_summary=count").json()
    assert body["total"] == 3
    assert body["entry"] == []
    assert "next" not in _links(body)
    body = client.get("/fhir/Patient?_total=accurate&_count=1").json()
    assert body["total"] == 3
    assert len(body["entry"]) == 1
    assert "next" in _links(body)


def test_paging_to_the_end_stops(client: TestClient) -> None:
    _three_patients(client)
    url: str | None = "/fhir/Patient?_count=1"
    seen: list[str] = []
    for _ in range(10):
        if url is None:
            break
        body = client.get(url.removeprefix("http://testserver")).json()
        seen += [e["resource"]["id"] for e in body["entry"]]
        url = _links(body).get("next")
    assert len(seen) == 3
    assert url is None


def test_elements_trims_entries_and_marks_them_subsetted(client: TestClient) -> None:
    _three_patients(client)
    body = client.get("/fhir/Patient?_elements=identifier&_count=1").json()
    resource = body["entry"][0]["resource"]
    assert set(resource) == {"resourceType", "id", "meta", "identifier"}
    assert SUBSETTED in resource["meta"]["tag"]
    assert resource["meta"]["versionId"] == "1"
    # the stored resource is untouched
    full = client.get(f"/fhir/Patient/{resource['id']}").json()
    assert "name" in full
    assert "tag" not in full["meta"]


def test_summary_true_keeps_the_summary_elements(client: TestClient) -> None:
    pid = _post(client, patient(fnr(), maritalStatus={"text": "Gift"},
                                text={"status": "generated", "div": "<div>Kari</div>"}))
    body = client.get(f"/fhir/Patient?_id={pid}&_summary=true").json()
    resource = body["entry"][0]["resource"]
    assert {"identifier", "name", "gender", "birthDate", "address"} <= set(resource)
    assert "maritalStatus" not in resource  # not a summary element of Patient
    assert "text" not in resource
    assert SUBSETTED in resource["meta"]["tag"]
    body = client.get(f"/fhir/Patient?_id={pid}&_summary=data").json()
    assert "text" not in body["entry"][0]["resource"]
    assert "maritalStatus" in body["entry"][0]["resource"]


def test_a_bad_summary_is_400(client: TestClient) -> None:
    r = client.get("/fhir/Patient?_summary=maybe")
    assert r.status_code == 400
    assert "_summary" in r.json()["issue"][0]["diagnostics"]


def test_unsupported_methods_are_405_with_allow(client: TestClient) -> None:
    pid = _post(client, patient(fnr()))
    for method, url, allowed in (
            ("PUT", "/fhir/", {"POST"}),
            ("DELETE", "/fhir", {"POST"}),
            ("POST", "/fhir/.well-known/smart-configuration", {"GET"}),
            ("POST", "/fhir/metadata", {"GET"}),
            ("DELETE", f"/fhir/Patient/{pid}/_history", {"GET"}),
            ("POST", f"/fhir/Patient/{pid}/_history", {"GET"})):
        r = client.request(method, url, json={"resourceType": "Patient"})
        assert r.status_code == 405, (method, url, r.text)
        assert allowed <= set(r.headers["allow"].split(", ")), (method, url, r.headers)
        assert r.json()["issue"][0]["code"] == "not-supported"
    assert client.get("/fhir/no/such/thing/here").status_code == 404
    assert client.post("/fhir/Patient/x/$nothing").status_code in (404, 405)


def test_last_modified_is_an_http_date(client: TestClient) -> None:
    from email.utils import parsedate_to_datetime

    pid = _post(client, patient(fnr()))
    r = client.get(f"/fhir/Patient/{pid}")
    stamp = r.headers["last-modified"]
    assert stamp.endswith(" GMT")
    when = parsedate_to_datetime(stamp)
    last_updated = r.json()["meta"]["lastUpdated"]
    assert when.isoformat()[:19] == last_updated[:19]


def test_xml_is_not_acceptable(client: TestClient) -> None:
    for url, headers in (("/fhir/Patient?_format=xml", {}),
                         ("/fhir/Patient?_format=application/fhir%2Bxml", {}),
                         ("/fhir/Patient", {"Accept": "application/fhir+xml"}),
                         ("/fhir/metadata", {"Accept": "application/xml"})):
        r = client.get(url, headers=headers)
        assert r.status_code == 406, (url, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"
    for url, headers in (("/fhir/Patient?_format=json", {}),
                         ("/fhir/Patient", {"Accept": "application/fhir+json"}),
                         ("/fhir/Patient", {"Accept": "application/json+fhir"}),
                         ("/fhir/Patient", {"Accept": "text/html,application/xml;q=0.9,*/*;q=0.8"}),
                         ("/fhir/Patient?_format=application/fhir%2Bjson", {})):
        assert client.get(url, headers=headers).status_code == 200, url


def test_a_fhir_version_other_than_r4_is_refused(client: TestClient) -> None:
    """R4 http.html 3.1.0.1.9: the fhirVersion MIME parameter names the version asked for or
    sent; this hub has R4 only (findings B 13)."""
    json_type = "application/fhir+json"
    for url, headers in (("/fhir/Patient", {"Accept": f"{json_type}; fhirVersion=3.0"}),
                         ("/fhir/Patient", {"Accept": f"{json_type};fhirVersion=5.0"}),
                         ("/fhir/Patient?_format=application/fhir%2Bjson;fhirVersion=3.0", {})):
        r = client.get(url, headers=headers)
        assert r.status_code == 406, (url, headers, r.text)
        assert "fhirVersion=" in r.json()["issue"][0]["diagnostics"]
    r = client.post("/fhir/Patient", content=jsonio.dumps_bytes(patient(fnr())),
                    headers={"Content-Type": f"{json_type}; fhirVersion=1.0"})
    assert r.status_code == 415, r.text
    assert "fhirVersion=1.0" in r.json()["issue"][0]["diagnostics"]
    assert client.get("/fhir/Patient").json()["entry"] == []
    # control: R4 named, or no version, works as before
    for version in ("4.0", "4.0.1"):
        for url, headers in (("/fhir/Patient", {"Accept": f"{json_type}; fhirVersion={version}"}),
                             (f"/fhir/Patient?_format=json;fhirVersion={version}", {})):
            assert client.get(url, headers=headers).status_code == 200, (url, headers)
    r = client.post("/fhir/Patient", content=jsonio.dumps_bytes(patient(fnr())),
                    headers={"Content-Type": f"{json_type}; fhirVersion=4.0"})
    assert r.status_code == 201, r.text


def test_the_capability_statement_says_how_to_authenticate(client: TestClient) -> None:
    rest = client.get("/fhir/metadata").json()["rest"][0]
    codes = [c["code"] for s in rest["security"]["service"] for c in s["coding"]]
    assert "SMART-on-FHIR" in codes
    (uris,) = [e for e in rest["security"]["extension"]
               if e["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/"
                              "oauth-uris"]
    token = next(e["valueUri"] for e in uris["extension"] if e["url"] == "token")
    assert token == "http://testserver/auth/token"
    smart = client.get("/fhir/.well-known/smart-configuration").json()
    assert smart["token_endpoint"] == token
    patient_type = next(r for r in rest["resource"] if r["type"] == "Patient")
    assert {"read", "search-type", "create", "update", "patch", "delete"} <= {
        i["code"] for i in patient_type["interaction"]}


def test_chained_search_by_the_patients_identifier(client: TestClient) -> None:
    from hub.fhir.identifiers import FNR_SYSTEM
    from tests.factories import encounter

    kari_number, ola_number = fnr(date(1969, 11, 13)), fnr(date(1980, 2, 1))
    kari = _post(client, patient(kari_number))
    ola = _post(client, patient(ola_number, given="Ola"))
    kari_enc = _post(client, encounter(f"Patient/{kari}"))
    _post(client, encounter(f"Patient/{ola}"))

    def matches(url: str) -> list[str]:
        body = client.get(url).json()
        assert all(e["search"]["mode"] != "outcome" for e in body["entry"]), body
        return [e["resource"]["id"] for e in body["entry"]]

    for name in ("subject:Patient.identifier", "patient.identifier", "subject.identifier",
                 "patient:Patient.identifier"):
        assert matches(f"/fhir/Encounter?{name}={FNR_SYSTEM}|{kari_number}") == [kari_enc], name
        assert matches(f"/fhir/Encounter?{name}={kari_number}") == [kari_enc], name
    assert matches(f"/fhir/Encounter?patient.identifier={FNR_SYSTEM}|00000000000") == []
    # a chain the hub cannot serve is reported, never an empty answer that looks like "none"
    assert matches("/fhir/Encounter?patient.organization.name=x") == []  # two links: served
    body = client.get("/fhir/Encounter?patient.organization.name:exact=x").json()
    outcome = [e for e in body["entry"] if e["search"]["mode"] == "outcome"]
    assert "patient.organization.name:exact" in outcome[0]["resource"]["issue"][0]["diagnostics"]
    body = client.get("/fhir/Encounter?_has:Task:patient:status=requested").json()
    assert [e for e in body["entry"] if e["search"]["mode"] == "outcome"]


def test_json_patch_updates_or_says_why_not(client: TestClient) -> None:
    pid = _post(client, patient(fnr()))
    patch_headers = {"Content-Type": "application/json-patch+json"}
    ops = [{"op": "test", "path": "/gender", "value": "female"},
           {"op": "replace", "path": "/gender", "value": "other"},
           {"op": "add", "path": "/name/0/given/-", "value": "Marie"}]
    r = client.patch(f"/fhir/Patient/{pid}", json=ops, headers=patch_headers)
    assert r.status_code == 200, r.text
    assert r.json()["gender"] == "other"
    assert r.json()["name"][0]["given"] == ["Kari", "Marie"]
    assert r.headers["etag"] == 'W/"2"'
    # a failed test, a bad path, an invalid result, a stale If-Match: nothing changes
    for body, headers, status in (
            ([{"op": "test", "path": "/gender", "value": "female"}], {}, 422),
            ([{"op": "remove", "path": "/nothing/here"}], {}, 422),
            ([{"op": "replace", "path": "/gender", "value": "x"}], {}, 422),
            ([{"op": "jump", "path": "/gender"}], {}, 400),
            ({"gender": "male"}, {}, 400),
            ([{"op": "replace", "path": "/gender", "value": "male"}], {"If-Match": 'W/"1"'},
             412)):
        r = client.patch(f"/fhir/Patient/{pid}", json=body, headers=patch_headers | headers)
        assert r.status_code == status, (body, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"
    r = client.patch(f"/fhir/Patient/{pid}", json={"gender": "male"})  # a merge patch
    assert r.status_code == 415
    stored = client.get(f"/fhir/Patient/{pid}").json()
    assert stored["meta"]["versionId"] == "2"
    assert stored["gender"] == "other"
    # the hub's own records are as read-only to PATCH as to PUT
    assert client.patch("/fhir/CodeSystem/task-code", json=[], headers=patch_headers) \
        .status_code == 405


def test_prefer_return_chooses_what_a_write_answers(client: TestClient) -> None:
    """FHIR R4 http.html#ops: `return=minimal` no body, `return=OperationOutcome` an outcome
    saying what was done, `return=representation` (and no Prefer) the resource; the choice is
    named in Preference-Applied. What is stored is the same either way."""
    body = patient(fnr(date(1981, 3, 4)))
    made = client.post("/fhir/Patient", json=body, headers={"Prefer": "return=OperationOutcome"})
    assert made.status_code == 201, made.text
    outcome = made.json()
    assert outcome["resourceType"] == "OperationOutcome"
    pid = made.headers["location"].split("/Patient/")[1].split("/")[0]
    assert outcome["issue"][0]["severity"] == "information"
    assert outcome["issue"][0]["diagnostics"] == f"Created Patient/{pid} as version 1."
    assert made.headers["preference-applied"] == "return=OperationOutcome"
    assert made.headers["etag"] == 'W/"1"'
    updated = client.put(f"/fhir/Patient/{pid}", json={**body, "id": pid, "gender": "female"},
                         headers={"Prefer": "handling=lenient, return=minimal"})
    assert updated.status_code == 200
    assert updated.content == b""
    assert updated.headers["preference-applied"] == "return=minimal"
    again = client.put(f"/fhir/Patient/{pid}", json={**body, "id": pid, "gender": "male"},
                       headers={"Prefer": "return=representation"})
    assert again.json()["gender"] == "male"
    assert again.json()["meta"]["versionId"] == "3"
    plain = client.put(f"/fhir/Patient/{pid}", json={**body, "id": pid, "gender": "other"})
    assert plain.json()["resourceType"] == "Patient"  # the default: the resource
    assert "preference-applied" not in plain.headers
    # the first `return` counts (RFC 7240); an unknown value is ignored
    two = client.put(f"/fhir/Patient/{pid}", json={**body, "id": pid, "gender": "unknown"},
                     headers=[("Prefer", "return=OperationOutcome"), ("Prefer", "return=minimal")])
    assert two.json()["issue"][0]["diagnostics"] == f"Patient/{pid} is at version 5."
    odd = client.put(f"/fhir/Patient/{pid}", json={**body, "id": pid, "gender": "female"},
                     headers={"Prefer": "return=everything"})
    assert odd.json()["resourceType"] == "Patient"
    assert client.get(f"/fhir/Patient/{pid}").json()["meta"]["versionId"] == "6"


def test_prefer_return_in_a_transaction_and_a_batch(client: TestClient) -> None:
    """`Prefer: return=representation` puts each written resource in its response entry,
    `return=OperationOutcome` an outcome naming what was stored, and without it a write's
    entry has its response alone; a read's resource is there either way."""
    def bundle(kind: str, number: str) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": kind, "entry": [
            {"request": {"method": "POST", "url": "Patient"}, "resource": patient(number)}]}

    plain = client.post("/fhir", json=bundle("transaction", fnr(date(1971, 1, 1)))).json()
    assert set(plain["entry"][0]) == {"response"}
    shown = client.post("/fhir", json=bundle("transaction", fnr(date(1972, 1, 1))),
                        headers={"Prefer": "return=representation"}).json()
    entry = shown["entry"][0]
    assert entry["resource"]["resourceType"] == "Patient"
    assert entry["response"]["location"] == (f"Patient/{entry['resource']['id']}/_history/1")
    told = client.post("/fhir", json=bundle("batch", fnr(date(1973, 1, 1))),
                       headers={"Prefer": "return=OperationOutcome"}).json()
    entry = told["entry"][0]
    assert "resource" not in entry
    pid = entry["response"]["location"].split("/")[1]
    assert entry["response"]["outcome"]["issue"][0]["diagnostics"] == (
        f"Created Patient/{pid} as version 1.")


def test_pretty_is_a_control_not_a_criterion(client: TestClient) -> None:
    """`_pretty` is accepted as `_format` is, also under `Prefer: handling=strict`, which
    still refuses a parameter the hub does not know."""
    _three_patients(client)
    strict = {"Prefer": "handling=strict"}
    r = client.get("/fhir/Patient?_pretty=true", headers=strict)
    assert r.status_code == 200, r.text
    assert len([e for e in r.json()["entry"] if e["search"]["mode"] == "match"]) == 3
    assert client.get("/fhir/Patient?_fooo=true", headers=strict).status_code == 400


def test_a_search_in_a_batch_answers_as_the_rest_search_does(client: TestClient) -> None:
    """A batch's search entry: an unsupported parameter is reported in an outcome entry (as
    the REST search reports it), `_elements` trims (SUBSETTED) and `_total` counts; before,
    the parameter was dropped in silence and the controls ignored."""
    _three_patients(client)
    r = client.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient?_fooo=1&_elements=gender&_total=accurate"
                                             "&_count=2"}}]})
    assert r.status_code == 200, r.text
    searchset = r.json()["entry"][0]["resource"]
    assert searchset["total"] == 3
    matches = [e["resource"] for e in searchset["entry"] if e["search"]["mode"] == "match"]
    assert len(matches) == 2
    assert all("name" not in m and m["gender"] == "female" for m in matches)
    assert all(any(t["code"] == "SUBSETTED" for t in m["meta"]["tag"]) for m in matches)
    [outcome] = [e["resource"] for e in searchset["entry"] if e["search"]["mode"] == "outcome"]
    assert "_fooo" in outcome["issue"][0]["diagnostics"]
