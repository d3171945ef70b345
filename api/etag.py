"""ETag / If-None-Match for reads, so a dashboard that polls pays for a change, not a poll.

A pure ASGI middleware: a `GET` under /v1/ answered 200 with a body (not a stream) gets a
strong ETag, the BLAKE2b digest of the body, and `Cache-Control: no-cache` (clients revalidate
every time). When the request's If-None-Match names that tag (or is `*`) the answer is
`304 Not Modified` without a body. Hashing the rendered body keeps the tag exact for every
route, whatever it reads; the database work of a poll remains, the transfer and the client's
parsing go.
"""

import hashlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_NO_BODY_HEADERS = {b"content-length", b"content-type", b"content-encoding"}


def etag_of(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 weak comparison: `W/` prefixes are ignored; `*` matches any tag."""
    wanted = etag.removeprefix("W/")
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == wanted:
            return True
    return False


class ETagMiddleware:
    def __init__(self, app: ASGIApp, prefix: str = "/v1/") -> None:
        self.app, self.prefix = app, prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in ("GET", "HEAD")
            or not scope["path"].startswith(self.prefix)
        ):
            await self.app(scope, receive, send)
            return
        if_none_match = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"if-none-match"), None
        )
        start: Message | None = None
        chunks: list[bytes] = []
        passthrough = False

        async def buffered(message: Message) -> None:
            nonlocal start, passthrough
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", []))
                content_type = headers.get(b"content-type", b"")
                if message["status"] != 200 or content_type.startswith(b"text/event-stream"):
                    passthrough = True
                    await send(message)
                else:
                    start = message
                return
            if passthrough or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            assert start is not None
            body = b"".join(chunks)
            etag = etag_of(body)
            answer_headers = [
                (k, v) for k, v in start.get("headers", []) if k not in (b"etag", b"cache-control")
            ]
            answer_headers += [(b"etag", etag.encode()), (b"cache-control", b"no-cache")]
            if if_none_match is not None and matches(if_none_match, etag):
                kept = [(k, v) for k, v in answer_headers if k not in _NO_BODY_HEADERS]
                await send({"type": "http.response.start", "status": 304, "headers": kept})
                await send({"type": "http.response.body", "body": b""})
                return
            await send({**start, "headers": answer_headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, buffered)
