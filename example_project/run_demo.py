"""The offline demo (``make demo``): the example site, the fake Intuit and a django-q2 cluster.

1. migrates the example site's SQLite database (example_project/db.sqlite3);
2. creates (or resets) the demo user and prints its username and password;
3. serves the fake Intuit on 127.0.0.1 (port 8765, or a free one), with the
   site's callback registered and its Disconnect URL set;
4. starts the site (``manage.py runserver 127.0.0.1:8000 --noreload``, or a free
   port) and a django-q2 cluster (``manage.py qcluster``, ORM broker);
5. prints the URL to open. Ctrl-C stops everything.

Nothing leaves the machine. With QB_CLIENT_ID and QB_CLIENT_SECRET set, the
site talks to Intuit's real sandbox instead and no fake is started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MANAGE = HERE / "manage.py"
DEMO_USER = "demo"
DEMO_PASSWORD = "demo-password"
COLLEAGUE = "colleague"  # the second member, in organization mode (QB_DEMO_ORGANIZATIONS=1)
HOST = "127.0.0.1"


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers do: a port left in TIME_WAIT by the last run is free to them.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def pick_port(preferred: int) -> int:
    if port_free(preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def say(text: str = "") -> None:
    print(text, flush=True)


def wait_for_http(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the site stopped (exit code {process.returncode})")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - our own loopback URL
                return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the site did not answer at {url} within {timeout:.0f} s")


def prepare_database(env: dict[str, str]) -> None:
    """Migrate and create the demo user, in a child process with the site's settings."""
    subprocess.run(
        [sys.executable, str(MANAGE), "migrate", "--noinput", "-v", "0"], env=env, check=True
    )
    code = (
        "from django.contrib.auth import get_user_model\n"
        "User = get_user_model()\n"
        f"user, _ = User.objects.get_or_create(username={DEMO_USER!r})\n"
        f"user.set_password({DEMO_PASSWORD!r})\n"
        "user.is_staff = user.is_superuser = True\n"
        "user.save()\n"
    )
    if env.get("QB_DEMO_ORGANIZATIONS") == "1":
        # Organization mode: a second member shares the demo organization's companies.
        code += (
            f"colleague, _ = User.objects.get_or_create(username={COLLEAGUE!r})\n"
            f"colleague.set_password({DEMO_PASSWORD!r})\n"
            "colleague.save()\n"
            "from example_project.organizations.models import Organization\n"
            "org, _ = Organization.objects.get_or_create(name='Demo Organization')\n"
            "org.members.add(user, colleague)\n"
        )
    subprocess.run(
        [sys.executable, str(MANAGE), "shell", "-v", "0", "-c", code], env=env, check=True
    )


def stop(processes: list[tuple[str, subprocess.Popen]]) -> None:
    """SIGINT each child's process group, then SIGTERM, then SIGKILL, until all have ended."""
    for sig, grace in ((signal.SIGINT, 10), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        alive = [(name, p) for name, p in processes if p.poll() is None]
        if not alive:
            break
        for _name, process in alive:
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        for _name, process in alive:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
    # The cluster's workers are in its process group: make sure none is left behind.
    for _name, process in processes:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            continue
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def main() -> int:
    sys.path.insert(0, str(ROOT))
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "example_project.settings"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    real_intuit = bool(env.get("QB_CLIENT_ID") and env.get("QB_CLIENT_SECRET"))

    site_port = pick_port(8000)
    site_url = f"http://{HOST}:{site_port}"
    callbacks = [
        f"http://{HOST}:{site_port}/quickbooks/callback/",
        f"http://localhost:{site_port}/quickbooks/callback/",
    ]

    server = None
    fake = None
    if not real_intuit:
        from qb_oauth.testing import FakeIntuit, FakeIntuitServer

        fake = FakeIntuit(
            redirect_uris=callbacks,
            disconnect_url=f"{site_url}/quickbooks/intuit/disconnect/",
            webhook_url=f"{site_url}/quickbooks/webhooks/",
            webhook_verifier_token="example-webhook-verifier-not-a-secret",  # settings.py's
        )
        server = FakeIntuitServer(fake, host=HOST, port=pick_port(8765)).start()
        env["QB_FAKE_INTUIT_URL"] = server.url

    processes: list[tuple[str, subprocess.Popen]] = []
    try:
        say("Preparing the database (example_project/db.sqlite3)...")
        prepare_database(env)

        # Each child gets its own process group: Ctrl-C reaches them through us, once.
        site = subprocess.Popen(
            [sys.executable, str(MANAGE), "runserver", f"{HOST}:{site_port}", "--noreload"],
            env=env,
            start_new_session=True,
        )
        processes.append(("site", site))
        cluster = subprocess.Popen(
            [sys.executable, str(MANAGE), "qcluster"], env=env, start_new_session=True
        )
        processes.append(("django-q2 cluster", cluster))
        wait_for_http(site_url + "/", site)

        say()
        say("=" * 72)
        say(f"  qb_oauth demo is running. Open {site_url}/")
        say(f"  Sign in as: {DEMO_USER} / {DEMO_PASSWORD}   (also an admin: {site_url}/admin/)")
        if os.environ.get("QB_DEMO_ORGANIZATIONS") == "1":
            say(f"  Organization mode: {COLLEAGUE} / {DEMO_PASSWORD} shares the companies")
        if fake is not None:
            say(f"  Fake Intuit: {server.url} (discovery {fake.sandbox_discovery_url})")
            say("  Companies offered at its consent page:")
            for company in fake.companies:
                say(f"    {company.realm_id}  {company.name}")
            say(f"  Fake Intuit's controls: {server.url}/_fake/ (move its clock an hour ahead,")
            say("  disconnect a company 'inside QuickBooks', or send a webhook: the home page")
            say("  lists the events the site received)")
            say("  (The fake forgets its grants when it stops: companies connected in an")
            say("  earlier run show 'Needs reconnecting' until you reconnect them.)")
        else:
            say("  Intuit: the real sandbox (QB_CLIENT_ID is set); no fake started.")
            say(f"  Register {callbacks[1]} as a redirect URI and open it on localhost.")
        say(f"  django-q2 cluster: pid {cluster.pid}, refreshing connections on schedule")
        say("  Press Ctrl-C to stop everything.")
        say("=" * 72)
        say()

        while True:
            for name, process in processes:
                if process.poll() is not None:
                    say(f"The {name} stopped (exit code {process.returncode}); stopping the rest.")
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        say()
        say("Stopping...")
        return 0
    except (RuntimeError, subprocess.CalledProcessError) as err:
        say(f"The demo could not start: {err}")
        return 1
    finally:
        stop(processes)
        if server is not None:
            server.stop()
        for name, process in processes:
            say(f"  {name}: stopped (exit code {process.returncode})")
        say("Demo stopped.")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    # SIGTERM (kill, a closing terminal) stops the demo like Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    sys.exit(main())
