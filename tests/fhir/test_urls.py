"""URLs without their userinfo (hub.fhir.urls)."""

from __future__ import annotations

import pytest

from hub.fhir.urls import shown_url, url_problem, without_credentials, without_credentials_in


@pytest.mark.parametrize(("text", "shown"), [
    ("http://hubuser:S3cretPass@127.0.0.1:18131/demo/inbox/credorg",
     "http://***@127.0.0.1:18131/demo/inbox/credorg"),
    ("Delivered by push to https://u:p@ss@h.example/x. The consent permits it.",
     "Delivered by push to https://***@h.example/x. The consent permits it."),
    ("HTTP 422 from http://token@h:1/p: refused", "HTTP 422 from http://***@h:1/p: refused"),
    ("org add --endpoint https://a:b@h/x --id y", "org add --endpoint https://***@h/x --id y"),
    # the controls: nothing to take out
    ("https://ehr.time.kommune.example/fhir/messages",
     "https://ehr.time.kommune.example/fhir/messages"),
    ("http://h.example/p?who=a@b.example#x@y", "http://h.example/p?who=a@b.example#x@y"),
    ("write to post@time.kommune.no", "write to post@time.kommune.no"),
    ("", ""),
])
def test_the_userinfo_of_a_url_is_hidden_and_nothing_else(text: str, shown: str) -> None:
    assert without_credentials(text) == shown


def test_every_string_value_of_json_is_cleaned() -> None:
    event = {"outcomeDesc": "to http://u:p@h/x", "entity": [{"detail": [
        {"type": "reason", "valueString": "http://u:p@h/x"}]}], "n": 3}
    assert without_credentials_in(event) == {
        "outcomeDesc": "to http://***@h/x", "entity": [{"detail": [
            {"type": "reason", "valueString": "http://***@h/x"}]}], "n": 3}


@pytest.mark.parametrize("url", [
    "https://solauser:Xy/Z9pw@sola.example.test/fhir/msg",  # '/' in the password
    "https://solauser:Xy?Z9pw@sola.example.test/fhir/msg",
    "https://solauser:Xy#Z9pw@sola.example.test/fhir/msg",
    "https://sola.example.test:99999/fhir/msg",
    "https://sola.example.test/fhir/msg?x=1@2",
    "ftp://sola.example.test/fhir/msg",
    "not a url",
])
def test_a_url_whose_parts_cannot_be_told_apart_is_refused_and_shown_without_them(
        url: str) -> None:
    """Probe E (session 23): a password holding an unencoded '/', '?' or '#' ended the
    authority early, so `hub org endpoint` stored it in the public Endpoint address and the
    trail. Such a URL is refused, and shown as its scheme alone."""
    assert url_problem(url) is not None
    assert "Z9pw" not in shown_url(url)
    assert "sola" not in shown_url(url)


@pytest.mark.parametrize(("url", "shown"), [
    ("https://solauser:Xy%2FZ9pw@sola.example.test/fhir/msg",
     "https://***@sola.example.test/fhir/msg"),
    ("https://u:p@ss@h.example/x", "https://***@h.example/x"),
    ("http://127.0.0.1:8080/demo/inbox/x", "http://127.0.0.1:8080/demo/inbox/x"),
])
def test_a_url_the_hub_takes_is_shown_without_its_userinfo(url: str, shown: str) -> None:
    assert url_problem(url) is None
    assert shown_url(url) == shown
