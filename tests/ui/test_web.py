"""The /ui pages over HTTP: cookies, CSRF, sign-in answers, roles, security headers."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import select, update

from hub.auth.users import SIGN_IN_FAILED, set_user_active
from hub.db.auth_models import ClientRow, WebSessionRow
from hub.db.engine import Database
from hub.db.types import utcnow
from hub.ui.pages import SECURITY_HEADERS
from tests.audit.trail import mark, since
from tests.ui.conftest import PASSWORD, Browser, csrf_of, make_user, set_cookies, sign_in


def _sessions(database: Database) -> list[WebSessionRow]:
    with database.session(write=False) as s:
        return list(s.scalars(select(WebSessionRow)))


def _flags(header: str) -> set[str]:
    return {part.strip().lower() for part in header.split(";")[1:]}


def test_sign_in_sets_a_strict_http_only_cookie(database: Database, browser: Browser) -> None:
    make_user(database, "revisor")
    client = browser()
    response = sign_in(client, "revisor")
    assert response.status_code == 303
    assert response.headers["location"] == "/ui"
    cookie = set_cookies(response)["carehub_session"]
    assert {"httponly", "samesite=strict", "path=/"} <= _flags(cookie)
    assert "secure" not in _flags(cookie)
    [row] = _sessions(database)
    raw = cookie.split(";")[0].split("=", 1)[1]
    assert raw not in row.id_hash  # only the SHA-256 of the id is stored
    assert timedelta(hours=7, minutes=59) < row.expires_at - utcnow() <= timedelta(hours=8)
    home = client.get("/ui")
    assert home.status_code == 200
    assert "revisor" in home.text
    assert "audit trail" in home.text


def test_the_cookie_is_secure_over_https(database: Database, browser: Browser) -> None:
    make_user(database, "revisor")
    form = browser(https=True).get("/ui/sign-in")
    assert "secure" in _flags(set_cookies(form)["carehub_csrf"])
    client = browser(https=True)
    response = sign_in(client, "revisor")
    assert "secure" in _flags(set_cookies(response)["carehub_session"])
    assert client.get("/ui").status_code == 200


def test_forwarded_proto_counts_only_when_trusted(database: Database, browser: Browser) -> None:
    make_user(database, "revisor")
    proxied = {"X-Forwarded-Proto": "https"}
    untrusted = browser()
    untrusted.headers.update(proxied)
    cookie = set_cookies(sign_in(untrusted, "revisor"))["carehub_session"]
    assert "secure" not in _flags(cookie)
    trusted = browser(trust_forwarded_proto=True)
    trusted.headers.update(proxied)
    form = trusted.get("/ui/sign-in")
    csrf = set_cookies(form)["carehub_csrf"]
    assert "secure" in _flags(csrf)
    # The test client speaks plain http, so it keeps Secure cookies to itself: send it by hand,
    # as the browser (speaking https to the proxy) would.
    response = trusted.post("/ui/sign-in", headers={"Cookie": csrf.split(";")[0]},
                            data={"username": "revisor", "password": PASSWORD,
                                  "csrf_token": csrf_of(form)})
    assert response.status_code == 303
    assert "secure" in _flags(set_cookies(response)["carehub_session"])


def test_wrong_password_and_unknown_user_look_the_same(database: Database,
                                                       browser: Browser) -> None:
    make_user(database, "revisor")
    client = browser()
    wrong = sign_in(client, "revisor", "feil passord her")
    unknown = sign_in(client, "ingen-slik", PASSWORD)
    for response in (wrong, unknown):
        assert response.status_code == 401
        assert SIGN_IN_FAILED in response.text
        assert "carehub_session" not in set_cookies(response)
    assert _sessions(database) == []
    assert client.get("/ui").status_code == 303


def test_the_account_pauses_after_five_failures(database: Database, browser: Browser) -> None:
    make_user(database, "revisor")
    client = browser()
    for _ in range(5):
        assert sign_in(client, "revisor", "feil passord her").status_code == 401
    paused = sign_in(client, "revisor", PASSWORD)
    assert paused.status_code == 401
    assert SIGN_IN_FAILED in paused.text
    assert _sessions(database) == []


def test_the_pause_lifts_after_the_lockout(database: Database, browser: Browser) -> None:
    make_user(database, "revisor")
    client = browser(signin_max_failures=2, signin_lockout=0)
    for _ in range(2):
        assert sign_in(client, "revisor", "feil passord her").status_code == 401
    assert sign_in(client, "revisor").status_code == 303


def test_sign_in_without_the_csrf_token_is_refused(database: Database,
                                                   browser: Browser) -> None:
    make_user(database, "revisor")
    client = browser()
    token = csrf_of(client.get("/ui/sign-in"))
    creds = {"username": "revisor", "password": PASSWORD}
    missing = client.post("/ui/sign-in", data=creds)
    wrong = client.post("/ui/sign-in", data={**creds, "csrf_token": token[:-2] + "xx"})
    client.cookies.clear()
    no_cookie = client.post("/ui/sign-in", data={**creds, "csrf_token": token})
    for response in (missing, wrong, no_cookie):
        assert response.status_code == 403
        assert response.headers["content-type"].startswith("text/html")
        assert "carehub_session" not in set_cookies(response)
    assert _sessions(database) == []
    assert sign_in(client, "revisor").status_code == 303  # a fresh form still works


def test_sign_out_needs_the_sessions_csrf_token(database: Database, browser: Browser) -> None:
    make_user(database, "revisor")
    client = browser()
    sign_in(client, "revisor")
    home = client.get("/ui")
    token = csrf_of(home)
    pre_session = csrf_of(browser().get("/ui/sign-in"))
    for data in ({}, {"csrf_token": "x" * 43}, {"csrf_token": pre_session}):
        refused = client.post("/ui/sign-out", data=data)
        assert refused.status_code == 403
        assert client.get("/ui").status_code == 200
    assert len(_sessions(database)) == 1
    out = client.post("/ui/sign-out", data={"csrf_token": token})
    assert out.status_code == 303
    assert out.headers["location"] == "/ui/sign-in"
    assert _sessions(database) == []
    assert client.get("/ui").status_code == 303


def test_a_stolen_cookie_is_useless_after_sign_out(database: Database, browser: Browser) -> None:
    make_user(database, "revisor")
    client = browser()
    cookie = set_cookies(sign_in(client, "revisor"))["carehub_session"].split(";")[0]
    client.post("/ui/sign-out", data={"csrf_token": csrf_of(client.get("/ui"))})
    thief = browser()
    response = thief.get("/ui", headers={"Cookie": cookie})
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/sign-in"


def test_a_disabled_users_session_stops_at_once(database: Database, browser: Browser) -> None:
    make_user(database, "revisor")
    client = browser()
    sign_in(client, "revisor")
    assert client.get("/ui").status_code == 200
    with database.session(write=True) as s:
        set_user_active(s, "revisor", False)
    assert client.get("/ui").status_code == 303
    assert sign_in(client, "revisor").status_code == 401


def test_an_expired_session_no_longer_works(database: Database, browser: Browser) -> None:
    make_user(database, "revisor")
    client = browser()
    sign_in(client, "revisor")
    with database.session(write=True) as s:
        s.execute(update(WebSessionRow).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert client.get("/ui").status_code == 303


def test_without_a_session_ui_sends_you_to_sign_in(browser: Browser) -> None:
    client = browser()
    for path in ("/ui", "/ui/"):
        response = client.get(path)
        assert response.status_code == 303
        assert response.headers["location"] == "/ui/sign-in"
    form = client.get("/ui/sign-in")
    assert form.status_code == 200
    assert form.headers["content-type"] == "text/html; charset=utf-8"
    assert '<label for="username">' in form.text
    assert '<label for="password">' in form.text
    csrf = set_cookies(form)["carehub_csrf"]
    assert {"httponly", "samesite=strict", "path=/ui"} <= _flags(csrf)


def test_admin_home_lists_organisations_clients_and_users(database: Database, org_id: str,
                                                         browser: Browser) -> None:
    make_user(database, "admin", role="admin")
    make_user(database, "kari", role="coordinator", organization_id=org_id)
    with database.session(write=True) as s:
        s.add(ClientRow(id="dips-jaeren", organization_id=org_id, name="DIPS Arena, Jæren DPS",
                        jwks='{"keys": []}', active=True, created_at=utcnow()))
    client = browser()
    sign_in(client, "admin")
    home = client.get("/ui")
    assert home.status_code == 200
    for heading in ("Organisations", "Clients", "Users"):
        assert f">{heading}</h2>" in home.text
    assert "Jæren DPS" in home.text
    assert "983974791" in home.text
    assert "dips-jaeren" in home.text
    assert "DIPS Arena, Jæren DPS" in home.text
    assert "kari" in home.text
    assert "coordinator" in home.text


def test_coordinator_home_shows_their_organisation_only(database: Database, org_id: str,
                                                        browser: Browser) -> None:
    make_user(database, "admin", role="admin")
    make_user(database, "kari", role="coordinator", organization_id=org_id)
    client = browser()
    sign_in(client, "kari")
    home = client.get("/ui")
    assert home.status_code == 200
    assert "Jæren DPS" in home.text
    assert "pending transitions of your patients" in home.text
    for heading in ("Organisations", "Clients", "Users"):
        assert f">{heading}</h2>" not in home.text
    assert ">admin<" not in home.text


def test_names_are_escaped(database: Database, browser: Browser) -> None:
    make_user(database, "<b>ola</b>")
    client = browser()
    sign_in(client, "<b>ola</b>")
    home = client.get("/ui")
    assert "&lt;b&gt;ola&lt;/b&gt;" in home.text
    assert "<b>ola</b>" not in home.text


def test_every_ui_answer_carries_the_security_headers(database: Database,
                                                      browser: Browser) -> None:
    make_user(database, "revisor")
    client = browser()
    answers = [client.get("/ui"), client.get("/ui/sign-in"),
               client.post("/ui/sign-in", data={"username": "x"}),
               sign_in(client, "revisor", "feil passord her"), sign_in(client, "revisor"),
               client.get("/ui"), client.post("/ui/sign-out", data={})]
    assert [a.status_code for a in answers] == [303, 200, 403, 401, 303, 200, 403]
    for answer in answers:
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers[name] == value, (answer.request.url, name)
    # base-uri and form-action do not fall back to default-src (CSP 3): without them text
    # injected into a page could re-point its forms (probe F, session 23)
    assert SECURITY_HEADERS["Content-Security-Policy"] == (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'self'; object-src 'none'")


def test_a_form_that_is_not_a_web_form_is_refused(browser: Browser) -> None:
    client = browser()
    client.get("/ui/sign-in")
    response = client.post("/ui/sign-in", json={"username": "x"})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    big = client.post("/ui/sign-in", data={"username": "x" * 20000})
    assert big.status_code == 413


def test_signing_in_with_u0000_in_the_name_fails_as_an_unknown_name(
        browser: Browser, database: Database) -> None:
    make_user(database, "kari")
    before = mark(database)
    web = browser()
    r = sign_in(web, "ka\u0000ri")
    assert r.status_code == 401, r.text[:300]
    attempts = [x for x in since(database, before) if x.subtype == "login"]
    assert [x.agent for x in attempts] == ["User/ka\ufffdri"]  # recorded, marked where it was
    assert sign_in(web, "kari").status_code == 303  # control: the right name


def test_an_address_under_ui_that_nothing_answers_is_an_html_page(browser: Browser) -> None:
    """A mistyped or made-up address of the web pages (also one holding U+0000) is a 404
    page in HTML with the pages' security headers; a method a page does not take, a 405
    page that says which it takes. Control: the same under /fhir stays an OperationOutcome,
    and an address that only starts like /ui is not the pages'."""
    client = browser()
    for address in ("/ui/nothing-here", "/ui/patients/%00", "/ui/a/b/c"):
        page = client.get(address, headers={"Accept": "text/html"})
        assert page.status_code == 404, address
        assert page.headers["content-type"].startswith("text/html"), address
        assert "There is nothing at this address." in page.text
        for name, value in SECURITY_HEADERS.items():
            assert page.headers[name] == value, (address, name)
    wrong = client.put("/ui/sign-in", data={})
    assert wrong.status_code == 405
    assert wrong.headers["content-type"].startswith("text/html")
    assert "GET" in wrong.headers["allow"]
    for address in ("/fhir/nothing-here/x/y", "/uinothing"):
        outcome = client.get(address)
        assert outcome.status_code == 404, address
        assert outcome.headers["content-type"].startswith("application/fhir+json"), address
        assert outcome.json()["resourceType"] == "OperationOutcome"


def test_templates_translate_only_their_own_texts_with_underscore() -> None:
    """`_()` marks its result safe HTML and formats it with `%`: on a value (what an
    organisation sent) it let markup through and made a `%` a 500 (probe F, session 23).
    Values go through the `translated` filter, which escapes them; `_()` takes literals."""
    from pathlib import Path  # noqa: PLC0415

    folder = Path(__file__).resolve().parents[2] / "hub" / "ui" / "templates"
    found = [f"{page.name}: {m.group(0)}" for page in sorted(folder.glob("*.html"))
             for m in re.finditer(r"(?<![\w.])_\(\s*[^\s\"']", page.read_text())]
    assert found == []


def test_the_language_cookie_is_secure_over_tls(browser: Browser) -> None:
    """As the session's cookies are (probe F, session 23); plain HTTP, the control, not."""
    over_tls = browser(https=True).get("/ui/language?lang=nb&back=/ui")
    assert over_tls.status_code == 303
    assert "secure" in over_tls.headers["set-cookie"].lower()
    plain = browser().get("/ui/language?lang=nb&back=/ui")
    assert "carehub_lang=nb" in plain.headers["set-cookie"]
    assert "secure" not in plain.headers["set-cookie"].lower()
