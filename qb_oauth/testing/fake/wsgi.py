"""The fake's HTTP plumbing: a request parsed from a WSGI environ, a response, its answer."""

from __future__ import annotations

import contextlib
import json
import secrets
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

JSON_TYPE = "application/json;charset=UTF-8"
XML_TYPE = "application/xml;charset=UTF-8"
NO_STORE = ("cache-control", "no-cache, no-store")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    script_name: str = ""

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    @property
    def content_type(self) -> str:
        return (self.header("content-type") or "").split(";")[0].strip().lower()

    def form(self) -> dict[str, list[str]]:
        try:
            return parse_qs(self.body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            return {}


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    trickle: float | None = None  # a "trickle" fault: seconds between the answer's bytes


def request_from_environ(environ: dict) -> Request:
    headers: dict[str, str] = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers[key[5:].replace("_", "-").lower()] = value
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = environ["CONTENT_TYPE"]
    if environ.get("CONTENT_LENGTH"):
        headers["content-length"] = environ["CONTENT_LENGTH"]
    # wsgiref drops headers whose name holds "_" (intuit's own are sent with "-").
    body = b""
    with contextlib.suppress(ValueError, TypeError):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length > 0:
            body = environ["wsgi.input"].read(length)
    path = environ.get("PATH_INFO", "") or "/"
    # WSGI gives PATH_INFO as latin-1 decoded bytes; undo that for non-ASCII paths.
    with contextlib.suppress(UnicodeError):
        path = path.encode("latin-1").decode("utf-8")
    return Request(
        method=environ.get("REQUEST_METHOD", "GET").upper(),
        path=path,
        query=parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True),
        headers=headers,
        body=body,
        script_name=environ.get("SCRIPT_NAME", ""),
    )


def start(resp: Response, start_response) -> list[bytes]:
    """Hand ``resp`` to WSGI's ``start_response``; the body to return from the app."""
    reason = HTTPStatus(resp.status).phrase
    headers = list(resp.headers)
    if not any(k.lower() == "content-length" for k, _ in headers):
        headers.append(("Content-Length", str(len(resp.body))))
    start_response(f"{resp.status} {reason}", headers)
    return [resp.body]


def with_tid(resp: Response) -> Response:
    """``resp`` with an ``intuit_tid`` header, as every answer from Intuit has."""
    if not any(k.lower() == "intuit_tid" for k, _ in resp.headers):
        resp.headers.append(("intuit_tid", f"1-{secrets.token_hex(4)}-{secrets.token_hex(12)}"))
    return resp


def json_response(status: int, body: Any, extra: list[tuple[str, str]] | None = None) -> Response:
    data = json.dumps(body).encode("utf-8")
    return Response(status, [("Content-Type", JSON_TYPE)] + list(extra or []), data)


def html_response(status: int, text: str) -> Response:
    return Response(status, [("Content-Type", "text/html;charset=UTF-8")], text.encode("utf-8"))


def empty_response(status: int) -> Response:
    return Response(status, [NO_STORE])
