"""SMART Backend Services (CONTRACT section 3): the token endpoint, each attack on it, and
bearer tokens on /fhir. Every test runs on SQLite and PostgreSQL.

The tests build their own TestClient without default headers, so that every request carries
exactly the Authorization header the test means."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import func, select, update

from hub.app import create_app
from hub.auth.clients import list_clients, register_client, replace_jwks, set_client_active
from hub.auth.subject import Subject
from hub.auth.tokens import subject_for_token, token_url
from hub.config import Settings
from hub.db.auth_models import AccessTokenRow, UsedAssertionRow
from hub.db.engine import Database
from hub.db.types import utcnow
from hub.errors import BadRequestError, NotFoundError
from hub.store import service
from tests.auth_helpers import (
    FORM,
    client_assertion,
    ensure_organization,
    make_es384_key,
    make_rs384_key,
    register,
    register_and_token,
    token_form,
)
from tests.factories import organization, patient

ORG = "org-time"


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    """An HTTP client on the hub app, with no default headers."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def url(settings: Settings) -> str:
    """The token URL, which an assertion's aud must name."""
    return token_url(settings)


@pytest.fixture
def es_client(database: Database) -> tuple[str, ECKey]:
    """A registered client with one ES384 key (kid 'es-1')."""
    key, jwks = make_es384_key("es-1")
    return register(database, org_id=ORG, jwks=jwks), key


def _tokens(database: Database) -> int:
    with database.session(write=False) as s:
        return int(s.scalar(select(func.count()).select_from(AccessTokenRow)) or 0)


def _post(api: TestClient, assertion: str, scope: str = "system/*.*") -> httpx.Response:
    response: httpx.Response = api.post("/auth/token", data=token_form(assertion, scope),
                                        headers=FORM)
    return response


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _refused(response: httpx.Response, database: Database, status: int,
             error: str = "invalid_client") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error
    assert set(body) == {"error", "error_description"}
    assert body["error_description"]
    assert response.headers["cache-control"] == "no-store"
    assert _tokens(database) == 0, "a refused request must not issue a token"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def _segments(assertion: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    head, payload, signature = assertion.split(".")
    return _unb64(head), _unb64(payload), signature


# --- the happy paths -------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["ES384", "RS384"])
def test_es384_and_rs384_assertions_give_a_working_token(
        api: TestClient, database: Database, url: str, kind: str) -> None:
    key, jwks = make_es384_key("k1") if kind == "ES384" else make_rs384_key("k1")
    client_id = register(database, org_id=ORG, jwks=jwks)
    r = _post(api, client_assertion(key, client_id, url, alg=kind), "system/Patient.read")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "bearer"
    assert 0 < body["expires_in"] <= 300
    assert body["scope"] == "system/Patient.read"
    assert r.headers["cache-control"] == "no-store"
    assert api.get("/fhir/Patient", headers=_bearer(body["access_token"])).status_code == 200
    with database.session(write=False) as s:
        row = s.scalars(select(AccessTokenRow)).one()
    assert row.token_hash == hashlib.sha256(body["access_token"].encode()).hexdigest()
    assert row.client_id == client_id


def test_register_and_token_helper_gives_a_full_access_token(
        api: TestClient, database: Database) -> None:
    token = register_and_token(api, database, org_id=ORG)
    r = api.post("/fhir/Patient", json=patient(), headers=_bearer(token))
    assert r.status_code == 201, r.text
    again = register_and_token(api, database, org_id=ORG)  # the organisation exists now
    assert again != token


def test_token_lifetime_setting_is_capped_at_300(settings: Settings, database: Database,
                                                 es_client: tuple[str, ECKey]) -> None:
    client_id, key = es_client
    for lifetime, expected in ((60, 60), (3600, 300)):
        tuned = settings.model_copy(update={"token_lifetime": lifetime})
        with TestClient(create_app(tuned), raise_server_exceptions=False) as c:
            r = _post(c, client_assertion(key, client_id, token_url(tuned)))
        assert r.status_code == 200, r.text
        assert r.json()["expires_in"] == expected


# --- attacks on the assertion ----------------------------------------------------------

def test_alg_none_is_refused(api: TestClient, database: Database, url: str,
                             es_client: tuple[str, ECKey]) -> None:
    client_id, _ = es_client
    now = int(time.time())
    head = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "es-1"}).encode())
    body = _b64(json.dumps({"iss": client_id, "sub": client_id, "aud": url, "exp": now + 60,
                            "jti": "j1"}).encode())
    _refused(_post(api, f"{head}.{body}."), database, 400)


def test_hs256_signed_with_the_public_key_as_secret_is_refused(
        api: TestClient, database: Database, url: str) -> None:
    key, jwks = make_rs384_key("rs-1")
    client_id = register(database, org_id=ORG, jwks=jwks)
    now = int(time.time())
    for secret in (key.as_pem(private=False), json.dumps(jwks["keys"][0]).encode()):
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rs-1"}).encode())
        body = _b64(json.dumps({"iss": client_id, "sub": client_id, "aud": url,
                                "exp": now + 60, "jti": str(uuid.uuid4())}).encode())
        mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
        _refused(_post(api, f"{head}.{body}.{_b64(mac)}"), database, 400)


def test_expired_assertion_is_refused(api: TestClient, database: Database, url: str,
                                      es_client: tuple[str, ECKey]) -> None:
    client_id, key = es_client
    _refused(_post(api, client_assertion(key, client_id, url, exp_in=-61,
                                         iat=int(time.time()) - 200)), database, 400)


def test_expiry_within_clock_skew_is_accepted(api: TestClient, url: str,
                                              es_client: tuple[str, ECKey]) -> None:
    client_id, key = es_client
    r = _post(api, client_assertion(key, client_id, url, exp_in=-30))
    assert r.status_code == 200, r.text


def test_exp_more_than_five_minutes_ahead_is_refused(
        api: TestClient, database: Database, url: str, es_client: tuple[str, ECKey]) -> None:
    client_id, key = es_client
    _refused(_post(api, client_assertion(key, client_id, url, exp_in=300 + 60 + 30)),
             database, 400)


def test_assertion_without_exp_is_refused(api: TestClient, database: Database, url: str,
                                          es_client: tuple[str, ECKey]) -> None:
    client_id, key = es_client
    _refused(_post(api, client_assertion(key, client_id, url, exp=None)), database, 400)


def test_iat_in_the_future_beyond_skew_is_refused(
        api: TestClient, database: Database, url: str, es_client: tuple[str, ECKey]) -> None:
    client_id, key = es_client
    _refused(_post(api, client_assertion(key, client_id, url, iat=int(time.time()) + 120)),
             database, 400)


def test_iat_in_the_future_within_skew_is_accepted(
        api: TestClient, url: str, es_client: tuple[str, ECKey]) -> None:
    client_id, key = es_client
    r = _post(api, client_assertion(key, client_id, url, iat=int(time.time()) + 30))
    assert r.status_code == 200, r.text


def test_nbf_in_the_future_is_refused(api: TestClient, database: Database, url: str,
                                      es_client: tuple[str, ECKey]) -> None:
    client_id, key = es_client
    _refused(_post(api, client_assertion(key, client_id, url, nbf=int(time.time()) + 120)),
             database, 400)


@pytest.mark.parametrize("aud", ["http://testserver/auth/token/", "http://evil.example/auth/token",
                                 "http://testserver/fhir", ["http://testserver/fhir"]])
def test_wrong_aud_is_refused(api: TestClient, database: Database,
                              es_client: tuple[str, ECKey], aud: Any) -> None:
    client_id, key = es_client
    _refused(_post(api, client_assertion(key, client_id, aud)), database, 400)


def test_aud_as_list_containing_the_token_url_is_accepted(
        api: TestClient, url: str, es_client: tuple[str, ECKey]) -> None:
    client_id, key = es_client
    r = _post(api, client_assertion(key, client_id, "x", aud=["http://other", url]))
    assert r.status_code == 200, r.text


def test_sub_differing_from_iss_is_refused(api: TestClient, database: Database, url: str,
                                           es_client: tuple[str, ECKey]) -> None:
    client_id, key = es_client
    _refused(_post(api, client_assertion(key, client_id, url, sub="someone-else")), database,
             400)


def test_missing_jti_is_refused(api: TestClient, database: Database, url: str,
                                es_client: tuple[str, ECKey]) -> None:
    client_id, key = es_client
    a = client_assertion(key, client_id, url)
    head, claims, _ = _segments(a)
    del claims["jti"]
    _refused(_post(api, jwt.encode(head, claims, key, algorithms=["ES384"])), database, 400)


def test_reused_jti_is_refused(api: TestClient, database: Database, url: str,
                               es_client: tuple[str, ECKey]) -> None:
    client_id, key = es_client
    assertion = client_assertion(key, client_id, url, jti="once-only")
    assert _post(api, assertion).status_code == 200
    for again in (assertion, client_assertion(key, client_id, url, jti="once-only")):
        r = _post(api, again)
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "invalid_client"
    assert _tokens(database) == 1


def test_one_jti_sent_concurrently_gives_exactly_one_token(
        live_url: str, database: Database, es_client: tuple[str, ECKey]) -> None:
    client_id, key = es_client
    assertion = client_assertion(key, client_id, f"{live_url}/auth/token", jti="raced")
    n = 8
    barrier = threading.Barrier(n)
    statuses: list[int] = []
    errors: list[str] = []

    def send() -> None:
        with httpx.Client(base_url=live_url, timeout=60) as http:
            barrier.wait()
            r = http.post("/auth/token", data=token_form(assertion), headers=FORM)
            statuses.append(r.status_code)
            if r.status_code != 200:
                errors.append(r.json()["error"])

    threads = [threading.Thread(target=send) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(statuses) == [200] + [400] * (n - 1)
    assert errors == ["invalid_client"] * (n - 1)
    assert _tokens(database) == 1


def test_unknown_kid_is_refused(api: TestClient, database: Database, url: str,
                                es_client: tuple[str, ECKey]) -> None:
    client_id, _ = es_client
    stranger, _ = make_es384_key("not-registered")
    _refused(_post(api, client_assertion(stranger, client_id, url)), database, 401)


def test_registered_kid_with_another_key_is_refused(
        api: TestClient, database: Database, url: str, es_client: tuple[str, ECKey]) -> None:
    client_id, _ = es_client
    impostor, _ = make_es384_key("es-1")  # the right kid, a different key
    _refused(_post(api, client_assertion(impostor, client_id, url)), database, 401)


def test_missing_kid_is_refused(api: TestClient, database: Database, url: str,
                                es_client: tuple[str, ECKey]) -> None:
    client_id, key = es_client
    head, claims, _ = _segments(client_assertion(key, client_id, url))
    del head["kid"]
    _refused(_post(api, jwt.encode(head, claims, key, algorithms=["ES384"])), database, 400)


def test_key_type_that_does_not_fit_the_alg_is_refused(
        api: TestClient, database: Database, url: str) -> None:
    es_key, es_jwks = make_es384_key("es")
    rs_key, rs_jwks = make_rs384_key("rs")
    client_id = register(database, org_id=ORG, jwks={"keys": es_jwks["keys"] + rs_jwks["keys"]})
    # Signed RS384 by the RSA key, but naming the EC key's kid.
    _refused(_post(api, client_assertion(rs_key, client_id, url, alg="RS384", kid="es")),
             database, 401)


@pytest.mark.parametrize("claim", ["exp", "sub", "jti", "aud"])
def test_tampered_payload_is_refused(api: TestClient, database: Database, url: str,
                                     es_client: tuple[str, ECKey], claim: str) -> None:
    client_id, key = es_client
    assertion = client_assertion(key, client_id, url)
    head, claims, signature = _segments(assertion)
    claims[claim] = claims[claim] + 1 if claim == "exp" else str(claims[claim]) + "x"
    forged = f"{assertion.split('.')[0]}.{_b64(json.dumps(claims).encode())}.{signature}"
    _refused(_post(api, forged), database, 401)


def test_unknown_client_is_refused(api: TestClient, database: Database, url: str) -> None:
    key, _ = make_es384_key("k")
    _refused(_post(api, client_assertion(key, "nobody", url)), database, 401)


def test_garbage_assertion_is_refused(api: TestClient, database: Database) -> None:
    for junk in ("not-a-jwt", "a.b.c", "", "x" * 20000):
        r = _post(api, junk)
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "invalid_client"
    assert _tokens(database) == 0


# --- the rest of the token request -----------------------------------------------------

def test_other_grant_type_is_refused(api: TestClient, database: Database, url: str,
                                     es_client: tuple[str, ECKey]) -> None:
    client_id, key = es_client
    form = {**token_form(client_assertion(key, client_id, url)), "grant_type": "password"}
    _refused(api.post("/auth/token", data=form, headers=FORM), database, 400,
             "unsupported_grant_type")


def test_wrong_assertion_type_is_refused(api: TestClient, database: Database, url: str,
                                         es_client: tuple[str, ECKey]) -> None:
    client_id, key = es_client
    form = {**token_form(client_assertion(key, client_id, url)),
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"}
    _refused(api.post("/auth/token", data=form, headers=FORM), database, 400)


def test_token_request_must_be_a_form(api: TestClient, database: Database, url: str,
                                      es_client: tuple[str, ECKey]) -> None:
    client_id, key = es_client
    r = api.post("/auth/token", json=token_form(client_assertion(key, client_id, url)))
    _refused(r, database, 400, "invalid_request")


def test_repeated_parameter_is_refused(api: TestClient, database: Database, url: str,
                                       es_client: tuple[str, ECKey]) -> None:
    client_id, key = es_client
    body = httpx.QueryParams(token_form(client_assertion(key, client_id, url))).add(
        "scope", "system/*.read")
    r = api.post("/auth/token", content=str(body), headers=FORM)
    _refused(r, database, 400, "invalid_request")


@pytest.mark.parametrize("scope", ["", "system/Patient.rw", "patient/*.read", "user/*.*",
                                   "system/Pasient.read", "system/Basic.read", "system/*",
                                   "system/*.read launch", "openid"])
def test_malformed_scope_is_invalid_scope(api: TestClient, database: Database, url: str,
                                          es_client: tuple[str, ECKey], scope: str) -> None:
    client_id, key = es_client
    _refused(_post(api, client_assertion(key, client_id, url), scope), database, 400,
             "invalid_scope")


def test_granted_scope_is_what_was_asked(api: TestClient, url: str,
                                         es_client: tuple[str, ECKey]) -> None:
    client_id, key = es_client
    asked = "system/Patient.read system/Encounter.* system/Patient.read"
    r = _post(api, client_assertion(key, client_id, url), asked)
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "system/Patient.read system/Encounter.*"


def test_used_assertions_are_pruned_once_expired(
        api: TestClient, database: Database, url: str, es_client: tuple[str, ECKey]) -> None:
    client_id, key = es_client
    assert _post(api, client_assertion(key, client_id, url, jti="old")).status_code == 200
    with database.session(write=True) as s:
        s.execute(update(UsedAssertionRow).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert _post(api, client_assertion(key, client_id, url, jti="new")).status_code == 200
    with database.session(write=False) as s:
        assert list(s.scalars(select(UsedAssertionRow.jti))) == ["new"]


# --- bearer tokens on /fhir ------------------------------------------------------------

def _token(api: TestClient, key: ECKey | RSAKey, client_id: str, url: str,
           scope: str = "system/*.*", alg: str = "ES384", kid: str | None = None) -> str:
    r = _post(api, client_assertion(key, client_id, url, alg=alg, kid=kid), scope)
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


def _is_401(r: httpx.Response) -> None:
    assert r.status_code == 401, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_fhir_without_authorization_is_401(api: TestClient) -> None:
    _is_401(api.get("/fhir/Patient"))
    _is_401(api.post("/fhir/Patient", json=patient()))


@pytest.mark.parametrize("header", ["Bearer garbage", "Bearer ", "Basic dXNlcjpwYXNz",
                                    "garbage", "Bearer " + "x" * 2000])
def test_fhir_with_a_bad_authorization_is_401(api: TestClient, header: str) -> None:
    _is_401(api.get("/fhir/Patient", headers={"Authorization": header}))


def test_metadata_and_smart_configuration_need_no_token(api: TestClient) -> None:
    assert api.get("/fhir/metadata").status_code == 200
    assert api.get("/fhir/.well-known/smart-configuration").status_code == 200


def test_smart_configuration_content(api: TestClient) -> None:
    r = api.get("/fhir/.well-known/smart-configuration")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {
        "token_endpoint": "http://testserver/auth/token",
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": ["system/*.read", "system/*.write", "system/*.*"],
        "capabilities": ["client-confidential-asymmetric"],
    }


def test_disabled_client_token_stops_working_at_once(
        api: TestClient, database: Database, url: str, es_client: tuple[str, ECKey]) -> None:
    client_id, key = es_client
    token = _token(api, key, client_id, url)
    assert api.get("/fhir/Patient", headers=_bearer(token)).status_code == 200
    with database.session(write=True) as s:
        set_client_active(s, client_id, False)
    _is_401(api.get("/fhir/Patient", headers=_bearer(token)))
    _refused(_post(api, client_assertion(key, client_id, url)), database, 401)
    with database.session(write=True) as s:
        set_client_active(s, client_id, True)
    _is_401(api.get("/fhir/Patient", headers=_bearer(token)))  # its tokens are gone for good
    assert api.get("/fhir/Patient", headers=_bearer(_token(api, key, client_id, url))
                   ).status_code == 200


def test_expired_access_token_is_401(api: TestClient, database: Database, url: str,
                                     es_client: tuple[str, ECKey]) -> None:
    client_id, key = es_client
    token = _token(api, key, client_id, url)
    with database.session(write=True) as s:
        s.execute(update(AccessTokenRow).values(expires_at=utcnow() - timedelta(seconds=1)))
    _is_401(api.get("/fhir/Patient", headers=_bearer(token)))


def test_token_with_too_narrow_a_scope_is_403(api: TestClient, url: str,
                                              es_client: tuple[str, ECKey]) -> None:
    client_id, key = es_client
    token = _token(api, key, client_id, url, "system/Patient.read")
    assert api.get("/fhir/Patient", headers=_bearer(token)).status_code == 200
    for r in (api.post("/fhir/Patient", json=patient(), headers=_bearer(token)),
              api.get("/fhir/Encounter/some-id", headers=_bearer(token)),
              api.get("/fhir/Encounter", headers=_bearer(token))):
        assert r.status_code == 403, r.text
        assert r.json()["resourceType"] == "OperationOutcome"
        assert r.json()["issue"][0]["code"] == "forbidden"


def test_token_subject_is_the_client_of_its_organisation(
        database: Database, url: str, api: TestClient, es_client: tuple[str, ECKey]) -> None:
    client_id, key = es_client
    token = _token(api, key, client_id, url, "system/Patient.read system/Task.*")
    with database.session(write=False) as s:
        subject = subject_for_token(s, token, utcnow())
        assert subject_for_token(s, token + "x", utcnow()) is None
        assert subject_for_token(s, token, utcnow() + timedelta(seconds=301)) is None
    assert subject is not None
    assert (subject.kind, subject.id, subject.organization_id) == ("client", client_id, ORG)
    assert subject.scopes == frozenset({"system/Patient.read", "system/Task.*"})


# --- keys and registration -------------------------------------------------------------

def test_key_rotation(api: TestClient, database: Database, url: str) -> None:
    old_key, old_jwks = make_es384_key("old")
    rs_key, rs_jwks = make_rs384_key("rsa")
    client_id = register(database, org_id=ORG, jwks={"keys": old_jwks["keys"] + rs_jwks["keys"]})
    assert _token(api, old_key, client_id, url)
    assert _token(api, rs_key, client_id, url, alg="RS384")
    new_key, new_jwks = make_es384_key("new")
    with database.session(write=True) as s:
        replace_jwks(s, client_id, json.dumps(new_jwks))
    r = _post(api, client_assertion(old_key, client_id, url))
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_client"
    assert _post(api, client_assertion(rs_key, client_id, url, alg="RS384")).status_code == 401
    assert _token(api, new_key, client_id, url)


def _register(database: Database, jwks: Any, org_id: str = ORG) -> str:
    ensure_organization(database, ORG)
    text = jwks if isinstance(jwks, str) else json.dumps(jwks)
    with database.session(write=True) as s:
        return register_client(s, organization_id=org_id, jwks_json=text, name="x")


def _rsa_public(bits: int) -> dict[str, Any]:
    return RSAKey.generate_key(bits, parameters={"kid": "r"}).as_dict(private=False)


@pytest.mark.parametrize(("jwks", "words"), [
    (lambda: {"keys": [make_es384_key("p")[0].as_dict(private=True)]}, "private"),
    (lambda: {"keys": [make_rs384_key("p")[0].as_dict(private=True)]}, "private"),
    (lambda: {"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}]}, "private"),
    (lambda: {"keys": [{**make_es384_key("x")[1]["keys"][0], "kid": None}]}, "kid"),
    (lambda: {"keys": [ECKey.generate_key("P-256", parameters={"kid": "e"}).as_dict(
        private=False)]}, "P-384"),
    (lambda: {"keys": [_rsa_public(1024)]}, "1024 bits"),
    (lambda: {"keys": []}, "keys"),
    (lambda: {"nokeys": 1}, "keys"),
    (lambda: [], "JSON object"),
    (lambda: "{not json", "not valid JSON"),
    (lambda: {"keys": make_es384_key("same")[1]["keys"] + make_es384_key("same")[1]["keys"]},
     "more than once"),
    (lambda: {"keys": [{**make_es384_key("a")[1]["keys"][0], "alg": "ES256"}]}, "ES256"),
    (lambda: {"keys": [{**make_es384_key("a")[1]["keys"][0], "x": "AAAA"}]}, "not a valid"),
])
def test_bad_jwks_is_refused_at_registration(database: Database, jwks: Any, words: str) -> None:
    with pytest.raises(BadRequestError, match=words):
        _register(database, jwks())


def test_registration_needs_an_existing_active_organisation(database: Database) -> None:
    _, jwks = make_es384_key("k")
    with pytest.raises(NotFoundError):
        _register(database, jwks, org_id="no-such-org")
    with database.session(write=True) as s:
        service.create(s, Subject.hub_itself(), resource={**organization(), "active": False},
                       assigned_id="closed")
    with pytest.raises(BadRequestError, match="not active"):
        _register(database, jwks, org_id="closed")


def test_registration_stores_the_public_keys_under_a_new_uuid(database: Database) -> None:
    _, jwks = make_es384_key("k")
    client_id = _register(database, jwks)
    assert uuid.UUID(client_id).version == 4
    with database.session(write=True) as s:
        rows = list_clients(s)
        with pytest.raises(NotFoundError):
            set_client_active(s, "unknown", False)
    assert [(r.id, r.organization_id, r.active) for r in rows] == [(client_id, ORG, True)]
    assert json.loads(rows[0].jwks) == jwks


@pytest.mark.parametrize("bad", ["time\n", "ti\u0000me", "", "t" * 65, "time kommune"])
def test_a_client_id_is_checked_to_its_last_character(database: Database, bad: str) -> None:
    """A pattern ending in "$" also matches before a last line feed: "time\\n" was taken."""
    ensure_organization(database, ORG)
    _, jwks = make_es384_key("k")
    with database.session(write=True) as s, pytest.raises(BadRequestError, match="client_id"):
        register_client(s, organization_id=ORG, jwks_json=json.dumps(jwks), name="x",
                        client_id=bad)
    with database.session(write=True) as s:  # control: the name without it
        assert register_client(s, organization_id=ORG, jwks_json=json.dumps(jwks), name="x",
                               client_id="time") == "time"
