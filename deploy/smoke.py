"""The smoke test of deploy/up.sh: the shared story (../shared/examples 01-15) through TLS.

    python deploy/smoke.py --base https://127.0.0.1:8443 --cafile tls/carehub.crt \
        --clients clients.json --examples ../shared/examples

`clients.json` maps each organisation id to {"client_id", "key_file", "kid"} (an ES384 key
made with `hub client keygen`). Each message is posted by its sender's client with a token
from /auth/token (SMART Backend Services, a signed client assertion), over HTTPS with the
certificate checked against `--cafile`; every one must be accepted (200). Then each sender
reads back what it sent (the Patient search by the story's fødselsnummer) and the capability
statement is fetched. Exits 1 naming the first step that failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def say(line: str) -> None:
    """One line of the report, on stdout."""
    sys.stdout.write(line + "\n")


def token(http: httpx.Client, base: str, client: dict[str, str]) -> str:
    """An access token for `client`."""
    url = f"{base}/auth/token"
    now = int(time.time())
    assertion = jwt.encode({"alg": "ES384", "typ": "JWT", "kid": client["kid"]},
                           {"iss": client["client_id"], "sub": client["client_id"], "aud": url,
                            "iat": now, "exp": now + 120, "jti": str(uuid.uuid4())},
                           ECKey.import_key(Path(client["key_file"]).read_bytes()),
                           algorithms=["ES384"])
    answer = http.post(url, data={"grant_type": "client_credentials", "scope": "system/*.*",
                                  "client_assertion_type": ASSERTION_TYPE,
                                  "client_assertion": assertion})
    if answer.status_code != 200:
        raise SystemExit(f"token for {client['client_id']}: {answer.status_code} {answer.text}")
    return str(answer.json()["access_token"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    ap.add_argument("--base", required=True)
    ap.add_argument("--cafile", required=True)
    ap.add_argument("--clients", required=True, type=Path)
    ap.add_argument("--examples", required=True, type=Path)
    args = ap.parse_args()
    clients: dict[str, dict[str, str]] = json.loads(args.clients.read_text(encoding="utf-8"))
    examples = sorted(args.examples.glob("[0-9][0-9]-*.json"))[:15]
    if len(examples) != 15:
        raise SystemExit(f"expected examples 01-15 in {args.examples}")
    with httpx.Client(verify=args.cafile, timeout=30) as http:
        tokens = {org: token(http, args.base, c) for org, c in clients.items()}
        for path in examples:
            message: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            sender = message["entry"][0]["resource"]["sender"]["reference"].split("/")[1]
            answer = http.post(f"{args.base}/fhir/$process-message", json=message,
                               headers={"Authorization": f"Bearer {tokens[sender]}",
                                        "Content-Type": "application/fhir+json"})
            if answer.status_code != 200:
                say(f"FAIL {path.name}: {answer.status_code} {answer.text[:500]}")
                return 1
            say(f"ok   {path.name} ({sender}) {answer.elapsed.total_seconds() * 1000:.0f} ms")
        found = http.get(f"{args.base}/fhir/Patient",
                         params={"identifier": "urn:oid:2.16.578.1.12.4.1.4.1|13116900216"},
                         headers={"Authorization": f"Bearer {tokens['jaeren-dps']}"})
        if found.status_code != 200 or not found.json().get("entry"):
            say(f"FAIL Patient search: {found.status_code} {found.text[:300]}")
            return 1
        say(f"ok   Patient?identifier: {len(found.json()['entry'])} found")
        meta = http.get(f"{args.base}/fhir/metadata")
        if meta.status_code != 200:
            say(f"FAIL metadata: {meta.status_code}")
            return 1
        say("ok   metadata")
    return 0


if __name__ == "__main__":
    sys.exit(main())
