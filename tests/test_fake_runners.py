"""The three ways to run the fake: pytest fixtures, ``python -m`` and ``manage.py``."""

from __future__ import annotations

import argparse
import io
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests
from django.core.management import call_command

from qb_oauth.testing import FakeIntuit, FakeIntuitServer
from qb_oauth.testing.pytest_plugin import REDIRECT_URIS


def test_fake_intuit_fixture_serves_http_and_sets_settings(fake_intuit, settings):
    assert fake_intuit.base_url.startswith("http://127.0.0.1:")
    assert requests.get(fake_intuit.discovery_url, timeout=5).status_code == 200
    assert list(REDIRECT_URIS) == fake_intuit.redirect_uris[:2]
    conf = settings.QB_OAUTH
    assert conf["DISCOVERY_URL"] == fake_intuit.sandbox_discovery_url
    assert conf["ENDPOINTS"] == {"api_base": fake_intuit.api_base}
    assert conf["CLIENT_ID"] == fake_intuit.client_id
    assert conf["HTTP_TIMEOUT"] == 5  # the site's other keys are kept


def test_fake_intuit_inprocess_fixture(fake_intuit_inprocess, settings):
    fake = fake_intuit_inprocess
    assert fake.base_url == "http://fake-intuit.test"
    assert requests.get(fake.discovery_url).json()["issuer"] == fake.issuer
    assert settings.QB_OAUTH["DISCOVERY_URL"] == fake.sandbox_discovery_url


def test_fixture_registers_the_sites_redirect_uri(request, settings):
    from qb_oauth.testing.pytest_plugin import _point_settings_at

    settings.QB_OAUTH = {"REDIRECT_URI": "https://site.example/qb/callback/"}
    fake = FakeIntuit()
    _point_settings_at(request, fake)
    assert "https://site.example/qb/callback/" in fake.redirect_uris
    assert settings.QB_OAUTH["REDIRECT_URI"] == "https://site.example/qb/callback/"


def test_server_is_concurrent(fake_intuit):
    fake_intuit.latency = {"discovery": 0.3}
    statuses = []

    def get():
        statuses.append(requests.get(fake_intuit.discovery_url, timeout=5).status_code)

    threads = [threading.Thread(target=get) for _ in range(10)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 10
    assert time.monotonic() - started < 2.5  # not ten latencies one after another


def test_server_start_stop_and_restart():
    fake = FakeIntuit()
    server = FakeIntuitServer(fake).start()
    url = server.url
    assert requests.get(fake.jwks_url, timeout=5).status_code == 200
    server.stop()
    server.stop()  # idempotent
    assert fake.base_url == "http://fake-intuit.test"
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(url + "/op/v1/jwks", timeout=2)
    with pytest.raises(RuntimeError):
        _ = server.url


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_python_m_entry_point():
    proc = subprocess.Popen(
        [sys.executable, "-m", "qb_oauth.testing", "--port", "0", "--client-id", "cli-client"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        # Ctrl-C must reach it even when this run was started in the background, where
        # the shell hands its children SIGINT ignored (Python then installs no handler).
        preexec_fn=_default_sigint,
    )
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        output = "".join(lines)
        discovery = next(
            line.split(": ", 1)[1].strip() for line in lines if line.startswith("Discovery URL")
        )
        doc = requests.get(discovery, timeout=5).json()
        assert doc["token_endpoint"].startswith("http://127.0.0.1:")
        assert '"CLIENT_ID": "cli-client"' in output
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    assert proc.returncode == 0, proc.stderr.read()


def test_management_command(monkeypatch, settings):
    settings.QB_OAUTH = {
        "CLIENT_ID": "site-client",
        "CLIENT_SECRET": "site-secret",
        "REDIRECT_URI": "https://site.example/quickbooks/callback/",
    }
    seen = {}

    def serve_forever(self):
        seen["fake"] = self.fake
        seen["discovery"] = requests.get(self.fake.sandbox_discovery_url, timeout=5).json()

    monkeypatch.setattr(FakeIntuitServer, "serve_forever", serve_forever)
    out = io.StringIO()
    call_command(
        "qb_fake_intuit",
        "--port",
        "0",
        "--redirect-uri",
        "http://localhost:8000/quickbooks/callback/",
        stdout=out,
    )
    fake = seen["fake"]
    assert fake.client_id == "site-client" and fake.client_secret == "site-secret"
    assert fake.redirect_uris == [
        "http://localhost:8000/quickbooks/callback/",
        "https://site.example/quickbooks/callback/",
    ]
    assert seen["discovery"]["issuer"].startswith("http://127.0.0.1:")
    text = out.getvalue()
    assert "Discovery URL: http://127.0.0.1:" in text
    assert '"DISCOVERY_URL"' in text and '"api_base"' in text


def test_management_command_webhook_options(monkeypatch, settings):
    settings.QB_OAUTH = {
        "CLIENT_ID": "site-client",
        "CLIENT_SECRET": "site-secret",
        "WEBHOOK_VERIFIER_TOKEN": ["newest", "older"],
    }
    seen = {}
    monkeypatch.setattr(
        FakeIntuitServer, "serve_forever", lambda self: seen.setdefault("fake", self.fake)
    )
    out = io.StringIO()
    call_command(
        "qb_fake_intuit",
        "--port",
        "0",
        "--webhook-url",
        "http://localhost:8000/quickbooks/webhooks/",
        "--webhook-time-scale",
        "0.01",
        stdout=out,
    )
    fake = seen["fake"]
    assert fake.webhook_url == "http://localhost:8000/quickbooks/webhooks/"
    assert fake.webhook_verifier_token == "newest" and fake.webhook_time_scale == 0.01
    assert "Webhooks to: http://localhost:8000/quickbooks/webhooks/" in out.getvalue()


def test_cli_webhook_options():
    from qb_oauth.testing import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--webhook-url", "http://x/", "--webhook-verifier-token", "t"])
    fake = cli.build(vars(args))
    assert (fake.webhook_url, fake.webhook_verifier_token) == ("http://x/", "t")
