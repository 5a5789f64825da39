"""The admin CLI of CONTRACT section 1, run as an operator would."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from hub.cli import app
from hub.config import get_settings


@pytest.fixture
def cli(db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[CliRunner]:
    monkeypatch.setenv("HUB_DATABASE_URL", db_url)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def _ok(result) -> str:  # type: ignore[no-untyped-def]
    assert result.exit_code == 0, result.output
    return str(result.output)


def test_org_client_user_lifecycle(cli: CliRunner, tmp_path: Path) -> None:
    out = _ok(cli.invoke(app, ["org", "add", "--id", "time-kommune", "--name", "Time kommune",
                               "--kind", "municipality", "--identifier",
                               "urn:oid:2.16.578.1.12.4.1.4.101|964969590"]))
    assert out.strip().splitlines()[-1] == "time-kommune"
    _ok(cli.invoke(app, ["client", "keygen", "--key", "k.pem", "--jwks", "k.json"]))
    assert stat.S_IMODE(os.stat(tmp_path / "k.pem").st_mode) == 0o600
    jwks = json.loads((tmp_path / "k.json").read_text())
    assert "d" not in jwks["keys"][0]  # only the public half
    out = _ok(cli.invoke(app, ["client", "add", "--org", "time-kommune", "--jwks", "k.json"]))
    client_id = out.strip().splitlines()[-1]
    assert client_id in _ok(cli.invoke(app, ["client", "list"]))
    out = _ok(cli.invoke(app, ["user", "add", "--username", "kari", "--role", "coordinator",
                               "--org", "time-kommune"], input="a-long-password-1\n"))
    assert out.strip().splitlines()[-1].isdigit()
    _ok(cli.invoke(app, ["org", "disable", "time-kommune"]))
    listed = _ok(cli.invoke(app, ["client", "list"]))
    assert client_id in listed
    assert "no" in listed.split(client_id)[1].splitlines()[0]


def test_errors_are_one_sentence_and_exit_1(cli: CliRunner) -> None:
    bad = cli.invoke(app, ["org", "add", "--name", "X", "--kind", "shop",
                           "--identifier", "a|b"])
    assert bad.exit_code == 1
    assert "Traceback" not in bad.output
    missing = cli.invoke(app, ["client", "disable", "nobody"])
    assert missing.exit_code == 1
    weak = cli.invoke(app, ["user", "add", "--username", "x", "--role", "admin"], input="short\n")
    assert weak.exit_code == 1


@pytest.mark.parametrize(("level", "shown"), [
    ("INFO", ["hub.delivery: mine", "apscheduler.scheduler: grave"]),
    ("DEBUG", ["hub.delivery: mine", "apscheduler.scheduler: chatter",
               "httpx: HTTP Request: POST", "alembic.runtime.migration: Running upgrade",
               "apscheduler.scheduler: grave"]),
    ("ERROR", []),
])
def test_the_log_level_shows_the_hubs_lines_and_not_the_libraries_routine(
        level: str, shown: list[str]) -> None:
    """HUB_LOG_LEVEL=INFO is for the operator: the hub's own lines, not alembic's,
    APScheduler's and httpx's line for every step, run and request (those from WARNING up,
    or at DEBUG); ERROR shows no warning from anyone. A process of its own: logging is
    global."""
    code = ("import logging\n"
            "from hub.config import Settings, configure_logging\n"
            f"configure_logging(Settings(log_level={level!r}))\n"
            "logging.getLogger('hub.delivery').info('mine')\n"
            "logging.getLogger('apscheduler.scheduler').info('chatter')\n"
            "logging.getLogger('httpx').info('HTTP Request: POST')\n"
            "logging.getLogger('alembic.runtime.migration').info('Running upgrade')\n"
            "logging.getLogger('apscheduler.scheduler').warning('grave')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).resolve().parents[1])
    lines = [line.split(" ", 3)[3] for line in done.stderr.splitlines()]
    assert [line.split("[", 1)[0] + ":" + line.split("]:", 1)[1] for line in lines] == shown


def _admin_texts(db_url: str) -> list[str]:
    """The outcomeDesc of each admin record, oldest first."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            bodies = conn.execute(text("SELECT body FROM audit_records WHERE subtype = 'admin' "
                                       "ORDER BY seq")).scalars().all()
    finally:
        engine.dispose()
    return [json.loads(bytes(b))["outcomeDesc"] for b in bodies]


def test_a_password_in_an_endpoint_url_is_not_written_into_the_trail(
        cli: CliRunner, db_url: str) -> None:
    """`org add --endpoint https://user:password@host/...` (a receiver wanting HTTP Basic):
    the admin record names the URL without its userinfo; a URL without any is recorded
    whole (the control)."""
    _ok(cli.invoke(app, ["org", "add", "--id", "cred", "--name", "Cred kommune", "--kind",
                         "municipality", "--identifier",
                         "urn:oid:2.16.578.1.12.4.1.4.101|911111111", "--endpoint",
                         "http://hubuser:S3cretPass@127.0.0.1:18131/demo/inbox/cred"]))
    _ok(cli.invoke(app, ["org", "add", "--id", "plain", "--name", "Plain kommune", "--kind",
                         "municipality", "--identifier",
                         "urn:oid:2.16.578.1.12.4.1.4.101|922222222", "--endpoint",
                         "https://ehr.plain.example/fhir/messages"]))
    cred, plain = _admin_texts(db_url)[-2:]
    assert "S3cretPass" not in cred
    assert "hubuser" not in cred
    assert "--endpoint http://***@127.0.0.1:18131/demo/inbox/cred" in cred
    assert "--endpoint https://ehr.plain.example/fhir/messages" in plain


def test_org_endpoint_sets_the_address_and_keeps_the_password_apart(
        cli: CliRunner, db_url: str) -> None:
    """`hub org endpoint ORG URL`: the Endpoint gets the address without its userinfo, the
    command and its admin record show `***` for it; an unknown organisation is one line."""
    _ok(cli.invoke(app, ["org", "add", "--id", "moved", "--name", "Moved kommune", "--kind",
                         "municipality", "--identifier",
                         "urn:oid:2.16.578.1.12.4.1.4.101|933333333"]))
    done = cli.invoke(app, ["org", "endpoint", "moved",
                            "https://hubuser:S3cretPass@ehr.moved.example/fhir/messages"])
    _ok(done)
    assert done.output.strip() == ("Endpoint/moved-msg -> "
                                   "https://***@ehr.moved.example/fhir/messages")
    listed = cli.invoke(app, ["org", "list"])
    assert "S3cretPass" not in listed.output
    assert "S3cretPass" not in _admin_texts(db_url)[-1]
    assert "org endpoint moved https://***@ehr.moved.example" in _admin_texts(db_url)[-1]
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            address = json.loads(bytes(conn.execute(text(
                "SELECT body FROM resources WHERE resource_type = 'Endpoint' "
                "AND logical_id = 'moved-msg'")).scalar_one()))["address"]
            kept = conn.execute(text("SELECT userinfo FROM endpoint_credentials")).all()
    finally:
        engine.dispose()
    assert address == "https://ehr.moved.example/fhir/messages"
    assert kept == [("hubuser:S3cretPass",)]
    # a password with an unencoded '/' would end the host early: refused, shown nowhere
    slash = cli.invoke(app, ["org", "endpoint", "moved",
                             "https://hubuser:Xy/Z9pw@ehr.moved.example/fhir/messages"])
    assert slash.exit_code == 1
    assert "Z9pw" not in slash.output
    assert "percent-encoded" in slash.output
    assert not any("Z9pw" in t for t in _admin_texts(db_url))
    assert "(refused:" in _admin_texts(db_url)[-1]
    nowhere = cli.invoke(app, ["org", "endpoint", "no-such", "https://x.example/"])
    assert nowhere.exit_code == 1
    assert len(nowhere.output.strip().splitlines()) == 1


@pytest.mark.parametrize(("url", "args"), [
    ("postgresql+psycopg://carehub:S3cretPw@127.0.0.1:1/carehub", ["org", "list"]),
    ("postgresql+psycopg://carehub:S3cretPw@127.0.0.1:1/carehub", ["db", "upgrade"]),
    ("sqlite:////nonexistent/dir/x.db", ["db", "upgrade"]),
    ("sqlite:////nonexistent/dir/x.db", ["deliveries", "list"]),
    ("postgresql+psycopg://carehub:S3cretPw@127.0.0.1:1/carehub", ["audit", "verify"]),
    ("sqlite:////nonexistent/dir/x.db", ["audit", "prove", "1"]),
])
def test_a_database_that_cannot_be_reached_is_one_sentence(
        url: str, args: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Not the driver's traceback: one line naming the database (without its password) and
    why, exit 1."""
    monkeypatch.setenv("HUB_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, args)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    assert "S3cretPw" not in result.output
    assert "Cannot use the database" in lines[0]
    assert ("Connection refused" if url.startswith("postgresql")
            else "unable to open database file") in lines[0]


def test_keygen_refuses_in_one_sentence_and_leaves_nothing_behind(
        cli: CliRunner, tmp_path: Path) -> None:
    """An existing key is not overwritten; a JWKS that cannot be written leaves no key
    behind, so the corrected retry works (the control: it does)."""
    (tmp_path / "k1.pem").write_text("mine\n")
    taken = cli.invoke(app, ["client", "keygen", "--key", "k1.pem", "--jwks", "k1.json"])
    assert taken.exit_code == 1
    assert "Traceback" not in taken.output
    assert "k1.pem exists" in taken.output
    assert (tmp_path / "k1.pem").read_text() == "mine\n"
    assert not (tmp_path / "k1.json").exists()
    nowhere = cli.invoke(app, ["client", "keygen", "--key", "k2.pem",
                               "--jwks", "/nonexistent/k2.json"])
    assert nowhere.exit_code == 1
    assert "Traceback" not in nowhere.output
    assert len(nowhere.output.strip().splitlines()) == 1
    assert not (tmp_path / "k2.pem").exists()
    _ok(cli.invoke(app, ["client", "keygen", "--key", "k2.pem", "--jwks", "k2.json"]))
    assert (tmp_path / "k2.pem").exists()
    assert json.loads((tmp_path / "k2.json").read_text())["keys"]
