"""/openapi.json describes every route truthfully, and schemathesis, fuzzing the live hub with
a real token for a bounded time, finds no server error, no undocumented status or media type
and no response that breaks our own document."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient

from hub.db.engine import Database
from tests.auth_helpers import client_assertion, make_es384_key, register, token_form

SECONDS = 60


def test_the_document_declares_bodies_params_media_types_and_statuses(
        client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    for path, item in doc["paths"].items():
        declared = set(re.findall(r"{(\w+)}", path))
        for method, op in item.items():
            params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert params == declared, (method, path)
            if method in ("post", "put"):
                assert op.get("requestBody", {}).get("content"), (method, path)
            for code, answer in op["responses"].items():
                if code != "204":
                    media = set(answer.get("content", {}))
                    assert media, (method, path, code)
                    assert "application/fhir+json" in media or path.startswith(
                        ("/auth/", "/fhir/.well-known/")), (method, path, code)
            codes = set(op["responses"])
            assert "400" in codes, (method, path)
            if path.startswith("/fhir") and path not in ("/fhir/metadata",
                                                         "/fhir/.well-known/smart-configuration"):
                assert {"401", "403", "404"} <= codes, (method, path)
                assert op["security"] == [{"bearer": []}]
    body = doc["paths"]["/fhir/{resource_type}"]["post"]["requestBody"]["content"]
    assert {"application/fhir+json", "application/json"} <= set(body)
    token = doc["paths"]["/auth/token"]["post"]["requestBody"]["content"]
    assert "application/x-www-form-urlencoded" in token
    assert "HTTPValidationError" not in str(doc)  # FastAPI's 422 body is never sent


def test_schemathesis_finds_no_server_error(live_url: str, database: Database,
                                            tmp_path: Path) -> None:
    key, jwks = make_es384_key("fuzz")
    client_id = register(database, org_id="org-fuzz", jwks=jwks)
    import httpx

    token = httpx.post(f"{live_url}/auth/token", data=token_form(
        client_assertion(key, client_id, f"{live_url}/auth/token"))).json()["access_token"]
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which(
        "schemathesis", path=str(Path(sys.executable).parent))
    assert st, "schemathesis is a dev dependency (pip install -e '.[dev]')"
    done = subprocess.run(
        [st, "run", f"{live_url}/openapi.json", "-H", f"Authorization: Bearer {token}",
         "--checks", "all",
         # a generic FHIR endpoint accepts only valid resources of its type, which a schema
         # of "any resource" cannot express: refusing generated junk is right here
         "--exclude-checks", "positive_data_acceptance",
         "--max-time", str(SECONDS), "--max-examples", "8", "--workers", "1",
         "--seed", "20261203", "--request-timeout", "20", "--no-color"],
        cwd=tmp_path, capture_output=True, text=True, timeout=SECONDS * 4, check=False)
    out = done.stdout + done.stderr
    summary = out[out.find("SUMMARY"):] if "SUMMARY" in out else out[-4000:]
    assert done.returncode == 0, out[-6000:]
    assert "Server error" not in out, summary
    assert "Traceback" not in out, summary
    assert re.search(r"\d+ passed", summary), summary
