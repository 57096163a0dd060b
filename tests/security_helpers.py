"""Helpers of tests/test_security.py: a sink for everything the app shows or writes, a test
client that records every response, a same-site check for redirects, raw query strings.

Nothing here mocks qb_oauth: the helpers only watch what it does.
"""

from __future__ import annotations

import io
import logging
import re
import traceback
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, quote_plus, urljoin, urlsplit

from django.db import connection as db_connection
from django.test import Client

SITE_HOST = "testserver"
TEMPLATE_LOGS = "logs (django.template)"

#: Loggers that must reach the root handler at DEBUG during the leak sweep.
WATCHED_LOGGERS = (
    "requests_oauthlib",
    "requests_oauthlib.oauth2_session",
    "requests_oauthlib.oauth2_auth",
    "oauthlib",
    "urllib3",
    "urllib3.connectionpool",
    "requests",
    "django",
    "django.request",
    "django.server",
    "django.security",
    "django.db.backends",
    "django.template",
    "qb_oauth",
    "qb_oauth.client",
    "qb_oauth.tokens",
    "qb_oauth.views",
    "qb_oauth.sweep",
    "quickbooks",
    "intuitlib",
    "jwt",
)


class Sink:
    """Every piece of text the app produced during a test, by where it came from."""

    def __init__(self) -> None:
        self.parts: dict[str, list[str]] = {}

    def add(self, where: str, text: Any) -> None:
        if text is None:
            return
        if isinstance(text, bytes | bytearray | memoryview):
            raw = bytes(text)
            self.parts.setdefault(where, []).append(raw.decode("latin-1"))
            self.parts.setdefault(where, []).append(raw.decode("utf-8", "replace"))
            return
        self.parts.setdefault(where, []).append(str(text))

    def add_exception(self, where: str, err: BaseException) -> None:
        self.add(where, str(err))
        self.add(where, repr(err))
        self.add(where, repr(err.args))
        describe = getattr(err, "describe", None)
        if callable(describe):
            self.add(where, describe())
        # The whole chain (__cause__, __context__) as a traceback would print it.
        self.add(where, "".join(traceback.format_exception(err)))

    def add_object(self, where: str, obj: Any) -> None:
        self.add(where, repr(obj))
        self.add(where, str(obj))

    def attempt(self, where: str, fn: Callable, *args, **kwargs) -> Any:
        """Call ``fn``; record and swallow the exception it raises (and its chain)."""
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # every exception is evidence, none is expected to escape
            self.add_exception(where, err)
            return err

    def text(self, where: str | None = None) -> str:
        keys = [where] if where else list(self.parts)
        return "\n\x00\n".join(t for k in keys for t in self.parts.get(k, []))

    def size(self) -> int:
        return sum(len(t) for texts in self.parts.values() for t in texts)

    def find(self, needles: Iterable[str]) -> list[tuple[str, str]]:
        """(where, needle prefix) of every needle found, whole or by its last 16 characters."""
        hits = []
        by_place = {k: self.text(k) for k in self.parts}
        for needle in needles:
            probes = {needle}
            if len(needle) >= 24:
                probes.add(needle[-16:])  # a truncated copy still leaks its tail
            for where, text in by_place.items():
                if any(p in text for p in probes):
                    hits.append((where, needle[:12] + "…"))
        return hits


class ListHandler(logging.Handler):
    """Keeps every record, formatted with its arguments and exception."""

    def __init__(self, sink: Sink) -> None:
        super().__init__(level=logging.DEBUG)
        self.sink = sink
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is still evidence
            message = f"{record.msg!r} % {record.args!r}"
        # Django's template engine logs the whole context (the request, its query string) at
        # DEBUG for every failed variable lookup: kept apart, see test_security.py.
        where = TEMPLATE_LOGS if record.name.startswith("django.template") else "logs"
        self.sink.add(where, f"{record.name} {record.levelname} {message}")
        self.sink.add(where, repr(record.args))
        if record.exc_info:
            self.sink.add(where, "".join(traceback.format_exception(*record.exc_info)))
        if record.stack_info:
            self.sink.add(where, record.stack_info)


class capture_all_logs:
    """Context manager: a DEBUG handler on the root logger; watched loggers at DEBUG and
    propagating (as a site that turns on DEBUG logging would have them)."""

    def __init__(self, sink: Sink) -> None:
        self.handler = ListHandler(sink)
        self.saved: list[tuple[logging.Logger, int, bool, bool]] = []

    def __enter__(self) -> ListHandler:
        root = logging.getLogger()
        self.saved.append((root, root.level, root.propagate, root.disabled))
        root.setLevel(logging.DEBUG)
        root.addHandler(self.handler)
        for name in WATCHED_LOGGERS:
            logger = logging.getLogger(name)
            self.saved.append((logger, logger.level, logger.propagate, logger.disabled))
            logger.setLevel(logging.DEBUG)
            logger.propagate = True
            logger.disabled = False
        # SQL with its parameters (django.db.backends logs only with a debug cursor).
        self.debug_cursor = db_connection.force_debug_cursor
        db_connection.force_debug_cursor = True
        return self.handler

    def __exit__(self, *exc) -> None:
        db_connection.force_debug_cursor = self.debug_cursor
        logging.getLogger().removeHandler(self.handler)
        for logger, level, propagate, disabled in reversed(self.saved):
            logger.setLevel(level)
            logger.propagate = propagate
            logger.disabled = disabled


class RecordingClient(Client):
    """A test client that hands every response (redirects followed too) to a sink."""

    def __init__(self, sink: Sink, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sink = sink
        self.responses = 0

    def request(self, **request):
        response = super().request(**request)
        self.responses += 1
        self.sink.add("html", getattr(response, "content", b""))
        self.sink.add("headers", repr(sorted(response.headers.items())))
        self.sink.add("cookies", response.cookies.output())
        context = getattr(response, "context", None)
        if context is not None:
            try:
                flat = context.flatten() if hasattr(context, "flatten") else {}
            except Exception:  # a ContextList of several templates
                flat = {}
                for sub in context:
                    flat.update(sub.flatten())
            for key, value in flat.items():
                if key in ("messages",):
                    self.sink.add("html", " ".join(str(m) for m in value))
        return response


def command_output(call: Callable[..., Any], *args, sink: Sink, **kwargs) -> str:
    """Run a management command; its stdout and stderr (and any error) go to the sink."""
    out, err = io.StringIO(), io.StringIO()
    sink.attempt("commands", call, *args, stdout=out, stderr=err, **kwargs)
    sink.add("commands", out.getvalue())
    sink.add("commands", err.getvalue())
    return out.getvalue()


def dump_database(sink: Sink) -> int:
    """Every column of every table, read with plain SQL (sessions decoded too); rows read."""
    from django.contrib.sessions.backends.db import SessionStore

    rows = 0
    quote_name = db_connection.ops.quote_name
    with db_connection.cursor() as cursor:
        for table in db_connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {quote_name(table)}")  # noqa: S608 (our own names)
            names = [c[0] for c in cursor.description]
            for row in cursor.fetchall():
                rows += 1
                for name, value in zip(names, row, strict=True):
                    if value is None:
                        continue
                    sink.add("database", value if isinstance(value, str) else value)
                    if table == "django_session" and name == "session_data":
                        sink.add("database", repr(SessionStore().decode(value)))
    return rows


# -- redirects ----------------------------------------------------------------------------

_C0_AND_SPACE = "".join(chr(i) for i in range(0x21))


def same_site(location: str) -> bool:
    """Whether a browser following ``location`` stays on this site, served over http or https.

    Normalises the way the WHATWG URL parser does for http(s): leading and
    trailing C0 controls and spaces dropped, tabs and newlines removed
    anywhere, backslashes read as slashes, three or more slashes read as two.
    User-info counts as off-site, and so does anything off-site from either
    scheme (``http:evil.com`` is a path on an http page, the host evil.com on
    an https one).
    """
    text = location.strip(_C0_AND_SPACE)
    text = re.sub(r"[\t\n\r]", "", text).replace("\\", "/")
    # Browsers skip any number of slashes before an http(s) authority: ///evil.com is evil.com.
    text = re.sub(r"^((?:https?:)?)/{3,}", r"\1//", text, flags=re.IGNORECASE)
    for base in (f"http://{SITE_HOST}/quickbooks/", f"https://{SITE_HOST}/quickbooks/"):
        target = urlsplit(urljoin(base, text))
        if not (
            target.scheme in ("http", "https")
            and target.hostname == SITE_HOST
            and target.username is None
            and target.password is None
        ):
            return False
    return True


# -- raw query strings --------------------------------------------------------------------

ENCODERS: dict[str, Callable[[str], str]] = {
    # Percent-encoded UTF-8, as a well-behaved client sends it.
    "quote": lambda s: quote(s, safe=""),
    "quote_plus": lambda s: quote_plus(s),
    # The UTF-8 bytes as they are on the wire (WSGI hands them over as latin-1).
    "raw": lambda s: s.encode("utf-8", "surrogatepass").decode("latin-1"),
}


def raw_query(pairs: Iterable[tuple[str, str, str]]) -> str:
    """``key=value&…`` from (key, value, encoder name) triples; repetition kept as given."""
    return "&".join(f"{ENCODERS[enc](k)}={ENCODERS[enc](v)}" for k, v, enc in pairs)
