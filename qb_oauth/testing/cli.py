"""Options shared by ``python -m qb_oauth.testing`` and ``manage.py qb_fake_intuit``."""

from __future__ import annotations

import argparse
import sys

from .fake import FakeIntuit
from .server import FakeIntuitServer, Writer, describe

DEFAULT_REDIRECT_URIS = (
    "http://localhost:8000/quickbooks/callback/",
    "http://127.0.0.1:8000/quickbooks/callback/",
)


def add_arguments(parser: argparse.ArgumentParser, *, defaults: dict | None = None) -> None:
    defaults = defaults or {}
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=8765, help="port (0: any free one)")
    parser.add_argument("--client-id", default=defaults.get("client_id", "qb-test-client"))
    parser.add_argument("--client-secret", default=defaults.get("client_secret", "qb-test-secret"))
    parser.add_argument(
        "--redirect-uri",
        action="append",
        dest="redirect_uris",
        metavar="URL",
        help="a registered redirect URI (repeatable); default: " + ", ".join(DEFAULT_REDIRECT_URIS),
    )
    parser.add_argument(
        "--environment",
        choices=("sandbox", "production"),
        default=defaults.get("environment", "sandbox"),
    )
    parser.add_argument("--disconnect-url", default=None, help="the app's Disconnect URL")
    parser.add_argument(
        "--webhook-url",
        default=defaults.get("webhook_url"),
        help="the site's webhook endpoint (e.g. http://localhost:8000/quickbooks/webhooks/)",
    )
    parser.add_argument(
        "--webhook-verifier-token",
        default=defaults.get("webhook_verifier_token"),
        help="the verifier token webhooks are signed with (the site's WEBHOOK_VERIFIER_TOKEN)",
    )
    parser.add_argument(
        "--webhook-time-scale",
        type=float,
        default=1.0,
        help="multiply Intuit's retry schedule (0, 10, 20, 30 s, 5 min, ...) by this",
    )


def build(options: dict) -> FakeIntuit:
    fake = FakeIntuit(
        client_id=options["client_id"],
        client_secret=options["client_secret"],
        redirect_uris=options.get("redirect_uris") or DEFAULT_REDIRECT_URIS,
        environment=options["environment"],
        disconnect_url=options.get("disconnect_url"),
        webhook_url=options.get("webhook_url"),
        webhook_verifier_token=options.get("webhook_verifier_token"),
    )
    if options.get("webhook_time_scale") is not None:
        fake.webhook_time_scale = options["webhook_time_scale"]
    return fake


def serve(fake: FakeIntuit, host: str, port: int, out: Writer = sys.stdout) -> None:
    """Start the server, print how to use it, block until Ctrl-C."""
    server = FakeIntuitServer(fake, host=host, port=port).start()
    try:
        describe(fake, out)
        server.serve_forever()
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m qb_oauth.testing", description="Serve the fake Intuit."
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    serve(build(vars(args)), args.host, args.port)
