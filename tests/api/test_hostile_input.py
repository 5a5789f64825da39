"""Bad input of any size or shape is a clear 4xx OperationOutcome, never a 5xx, and changes
nothing (CONTRACT section 2): deep nesting, huge numbers, numbers beyond 64 bits in the URL,
thousands of search criteria, duplicate JSON keys, a deep assertion at the token endpoint."""

from __future__ import annotations

import base64
import json

import pytest
from fastapi.testclient import TestClient

from tests.auth_helpers import FORM, token_form
from tests.factories import patient


def _outcome(r, status: int) -> str:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text[:500]
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    text = body["issue"][0]["diagnostics"]
    assert text
    assert "Traceback" not in r.text
    assert "None" not in text
    return str(text)


def _no_patients(client: TestClient) -> None:
    assert client.get("/fhir/Patient").json()["entry"] == []


@pytest.mark.parametrize("depth", [900, 5000, 100_000])
def test_deeply_nested_json_is_400(client: TestClient, depth: int) -> None:
    raw = '{"resourceType":"Patient","extension":' + "[" * depth + "]" * depth + "}"
    text = _outcome(client.post("/fhir/Patient", content=raw.encode()), 400)
    assert "nested" in text
    _no_patients(client)


def test_deep_nesting_in_a_message_is_400(client: TestClient) -> None:
    raw = '{"resourceType":"Bundle","type":"message","entry":' + "[" * 950 + "]" * 950 + "}"
    _outcome(client.post("/fhir/$process-message", content=raw.encode()), 400)


def test_integer_of_thousands_of_digits_is_400(client: TestClient) -> None:
    raw = '{"resourceType":"Patient","multipleBirthInteger":' + "9" * 4300 + "}"
    text = _outcome(client.post("/fhir/Patient", content=raw.encode()), 400)
    assert "digits" in text
    _no_patients(client)


def test_decimal_of_thousands_of_digits_is_a_4xx(client: TestClient) -> None:
    raw = '{"resourceType":"Patient","extension":[{"url":"http://x.example/e",' \
          '"valueDecimal":0.' + "1" * 5000 + "}]}"
    r = client.post("/fhir/Patient", content=raw.encode())
    assert 400 <= r.status_code < 500, r.text[:300]
    _no_patients(client)


def test_duplicate_keys_are_400(client: TestClient) -> None:
    raw = b'{"resourceType":"Patient","resourceType":"Flag"}'
    text = _outcome(client.post("/fhir/Patient", content=raw), 400)
    assert "resourceType" in text
    assert "more than once" in text
    raw = b'{"resourceType":"Patient","name":[{"family":"A","family":"B"}]}'
    _outcome(client.post("/fhir/Patient", content=raw), 400)
    _no_patients(client)


@pytest.mark.parametrize("url", [
    "/fhir/Patient?_offset=" + "9" * 30,
    "/fhir/Patient?_offset=18446744073709551616",
    "/fhir/Patient?_offset=" + "9" * 5000,
    "/fhir/Patient/{id}/_history?_offset=99999999999999999999999",
    "/fhir/Patient/{id}/_history/18446744073709551616",
    "/fhir/Patient/{id}/_history/" + "9" * 5000,
    "/fhir/Patient?birthdate=ge" + "9" * 40,
    "/fhir/Patient?_lastUpdated=gt" + "9" * 40,
])
def test_numbers_beyond_64_bits_in_the_url_are_4xx(client: TestClient, url: str) -> None:
    pid = client.post("/fhir/Patient", json=patient()).json()["id"]
    r = client.get(url.replace("{id}", pid))
    assert 400 <= r.status_code < 500, r.text[:300]
    assert r.json()["resourceType"] in ("OperationOutcome", "Bundle")


def test_a_huge_count_is_cut_or_refused_never_a_5xx(client: TestClient) -> None:
    assert client.get("/fhir/Patient?_count=5000").status_code == 200  # cut to the largest
    _outcome(client.get("/fhir/Patient?_count=" + "9" * 30), 400)


def test_thousands_of_search_criteria_are_4xx(client: TestClient) -> None:
    query = "&".join(f"family=n{i}" for i in range(1000))
    text = _outcome(client.get(f"/fhir/Patient?{query}"), 400)
    assert "criteria" in text
    query = "&".join(f"identifier=x|{i}" for i in range(1000))
    _outcome(client.post("/fhir/Patient/_search", content=query.encode(), headers=FORM), 400)


def test_many_values_in_one_criterion_are_4xx(client: TestClient) -> None:
    values = ",".join(f"n{i}" for i in range(5000))
    r = client.get(f"/fhir/Patient?family={values}")
    assert r.status_code == 400, r.text[:300]


def test_deep_assertion_at_the_token_endpoint_is_an_oauth_400(client: TestClient) -> None:
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    deep = b'{"iss":' + b"[" * 5000 + b"]" * 5000 + b"}"
    for header, claims in ((b'{"alg":"ES384","kid":"k"}', deep),
                           (b"[" * 5000 + b"]" * 5000, b'{"iss":"x"}'),
                           (b'{"alg":"ES384"}', b'{"iss":' + b"9" * 5000 + b"}")):
        assertion = f"{b64(header)}.{b64(claims)}.{b64(b'sig')}"
        r = client.post("/auth/token", data=token_form(assertion), headers=FORM)
        assert r.status_code in (400, 401), r.text[:300]
        assert r.json()["error"] == "invalid_client"


def test_a_valid_patient_still_goes_in(client: TestClient) -> None:
    r = client.post("/fhir/Patient", content=json.dumps(patient()).encode())
    assert r.status_code == 201, r.text
