"""Code that runs in worker processes started by the concurrency tests.

Each process sets up Django on the test's own database (passed by name) and
points QB_OAUTH at the fake Intuit the test serves over HTTP.
"""

import os
import threading


def setup_django(db_name: str, qb_oauth: dict, caches: dict | None = None) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    os.environ["QB_TEST_DB_NAME"] = db_name
    import django

    django.setup()
    from django.conf import settings

    settings.QB_OAUTH = qb_oauth
    if caches is not None:
        settings.CACHES = caches  # read when the cache is first used, which is after this


def ask_for_token(db_name, qb_oauth, pk, threads, ready, start, results):
    """Start ``threads`` threads that each call get_access_token(pk) once ``start`` is set."""
    setup_django(db_name, qb_oauth)
    from django.db import connections

    from qb_oauth import tokens
    from qb_oauth.models import QuickBooksConnection

    def one():
        try:
            conn = QuickBooksConnection.objects.get(pk=pk)
            start.wait(30)
            results.put(("ok", tokens.get_access_token(conn)))
        except Exception as err:  # reported to the test, which fails on it
            results.put(("error", f"{type(err).__name__}: {err}"))
        finally:
            connections.close_all()

    workers = [threading.Thread(target=one) for _ in range(threads)]
    for w in workers:
        w.start()
    ready.put(os.getpid())
    for w in workers:
        w.join()
