"""HEAD: answered as the GET of the same URL would be, without the body (RFC 9110 section
9.3.2). Clients and caches use it to check that a resource exists or has changed (its ETag
and Last-Modified) without fetching it.

The GET runs whole: the same token check, consent gate and audit record. The trail records
it as the read it is, since the answer's status and headers (a resource's existence, its
version) went out; only the body is held back here."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEAD = "head"
"""request.state.head is True on a HEAD turned GET."""


class HeadAsGet:
    """ASGI middleware: a HEAD request runs as GET; the response's status and headers go out,
    its body does not (Content-Length stays the GET's, as RFC 9110 allows)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        scope = {**scope, "method": "GET", "state": {**(scope.get("state") or {}), HEAD: True}}

        async def headers_only(message: Message) -> None:
            if message["type"] != "http.response.body":
                await send(message)
            elif not message.get("more_body", False):
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        await self.app(scope, receive, headers_only)
