"""HTTP_TIMEOUT bounds a whole call to Intuit, not only each socket read.

A server that answers one byte at a time, each within the read timeout, would
hold a refresh (and its lease) for as long as it likes; qb_oauth.deadline
ends the call when its deadline passes.
"""

import socket
import threading
import time

import pytest
import requests

from qb_oauth import client
from qb_oauth.deadline import call_deadline
from qb_oauth.exceptions import IntuitUnavailable

BODY = b'{"ok": true}'
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    + f"Content-Length: {len(BODY)}\r\n".encode()
    + b"Connection: close\r\n\r\n"
    + BODY
)


class TrickleServer:
    """Answers every request with ANSWER, one byte every ``pause`` seconds."""

    def __init__(self, pause: float) -> None:
        self.pause = pause
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/slow"
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stopped.is_set():
            try:
                conn, _addr = self.sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            try:
                for byte in ANSWER:
                    if self.stopped.is_set():
                        return
                    conn.sendall(bytes([byte]))
                    time.sleep(self.pause)
            except OSError:
                return

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def trickle():
    with TrickleServer(pause=0.05) as server:
        yield server


def test_each_read_within_its_timeout_is_not_enough(trickle):
    # The gap: plain requests with a 0.5 s timeout waits for the whole slow answer.
    started = time.monotonic()
    response = requests.get(trickle.url, timeout=0.5)
    assert response.json() == {"ok": True}
    assert time.monotonic() - started > 2 * 0.5


def test_call_deadline_ends_the_whole_call(trickle):
    session = client.http_session()
    started = time.monotonic()
    with call_deadline(0.5) as deadline, pytest.raises(requests.RequestException):
        session.get(trickle.url, timeout=0.5)
    elapsed = time.monotonic() - started
    assert deadline.expired
    assert 0.4 < elapsed < 1.5


def test_client_calls_are_bounded_by_http_timeout(trickle, settings):
    settings.QB_OAUTH = {**settings.QB_OAUTH, "HTTP_TIMEOUT": 0.5}
    started = time.monotonic()
    with pytest.raises(IntuitUnavailable, match="Timed out"):
        client.discovery_document(trickle.url)
    assert time.monotonic() - started < 1.5


def test_a_fast_call_is_untouched_and_the_connection_is_reused(fake_intuit):
    session = client.http_session()
    for _ in range(3):
        with call_deadline(5) as deadline:
            assert session.get(fake_intuit.discovery_url, timeout=5).status_code == 200
        assert not deadline.expired


def test_finished_calls_do_not_pile_up_in_the_watchdog(fake_intuit):
    """A finished call's watch leaves the watchdog's heap long before its deadline, so a
    busy process (a sweep at hundreds of refreshes a second) holds memory for the calls
    in flight only, not for every call made within the last deadline."""
    from qb_oauth import deadline as deadline_module

    session = client.http_session()
    for _ in range(300):
        with call_deadline(60):
            assert session.get(fake_intuit.discovery_url, timeout=5).status_code == 200
    # 300 watches with a 60 s deadline were pushed; at most the compaction threshold stays.
    assert len(deadline_module._WATCHDOG._heap) <= 65
