"""URLs without the secrets they may carry: the userinfo of `scheme://user:password@host`.

An Endpoint's address may hold HTTP Basic credentials for the receiver (`hub org add
--endpoint https://user:password@host/...`). The push sends them; nothing the hub records or
shows should: the audit trail is append-only and signed, so a password written into it stays
there for every auditor to read."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

HIDDEN = "***"
"""What stands for removed userinfo: `https://***@host/path` still shows that credentials
were given, and for which address."""

# scheme://, then userinfo up to the last "@" before the host (a password may hold "@"); the
# userinfo holds no "/", "?", "#" or white space, nor a quote (the end of a JSON string).
_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.\-]*://)[^\s/?#@\"'<>]*(?:@[^\s/?#@\"'<>]*)*@")
CREDENTIALS = re.compile(rb"://[^\s/?#\"]*@")
"""A quick scan of serialized JSON for a URL that may carry userinfo (bytes)."""


def without_credentials(text: str) -> str:
    """`text` with the userinfo of every URL in it replaced by HIDDEN; a URL without
    userinfo, and any other text, stays as it is."""
    if "@" not in text or "://" not in text:
        return text
    return _USERINFO.sub(lambda m: f"{m.group(1)}{HIDDEN}@", text)


def without_credentials_in(node: Any) -> Any:
    """`node` (JSON: dicts, lists, strings, ...) with `without_credentials` applied to every
    string value in it; what holds none comes back equal."""
    if isinstance(node, str):
        return without_credentials(node)
    if isinstance(node, dict):
        return {k: without_credentials_in(v) for k, v in node.items()}
    if isinstance(node, list):
        return [without_credentials_in(v) for v in node]
    return node


def url_problem(url: str) -> str | None:
    """Why `url` is not an http(s) URL whose parts the hub can tell apart (None: it is): a
    password holding an unencoded `/`, `?` or `#` ends the authority early, so the rest of
    it would be taken for the host, the port or the path, and shown as such."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
    except ValueError:
        parts = None
    encode = ("a password holding '/', '?' or '#' must be percent-encoded (%2F, %3F, %23)")
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        return "it is not an http(s) URL with a host and a numeric port" + (
            f"; {encode}" if "@" in url else "")
    if "@" in url[len(parts.scheme) + 3 + len(parts.netloc):]:
        return f"an '@' follows the host: {encode}"
    if any(c.isspace() for c in url):
        return "it holds white space"
    return None


def shown_url(url: str) -> str:
    """`url` as the hub may print or record it: its userinfo hidden; a URL whose parts
    cannot be told apart (`url_problem`) as its scheme alone, since any of the rest may be a
    password."""
    if url_problem(url) is None:
        return without_credentials(url)
    scheme = url.split("://", 1)[0] if "://" in url else ""
    return f"{scheme[:10]}://{HIDDEN} (not a URL the hub takes)" if scheme else HIDDEN

