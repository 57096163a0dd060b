"""Worker processes of the API limits tests: Django on the test's database and cache."""

import os
import threading
import time

from .workers import setup_django


def call_api(db_name, qb_oauth, caches, pk, threads, calls, ready, start, results):
    """``threads`` threads, each reading CompanyInfo ``calls`` times once ``start`` is set."""
    setup_django(db_name, qb_oauth, caches)
    from django.db import connections

    from qb_oauth.models import QuickBooksConnection

    def one():
        try:
            conn = QuickBooksConnection.objects.get(pk=pk)
            start.wait(30)
            with conn.api_session() as session:
                for _ in range(calls):
                    response = session.get(f"companyinfo/{conn.realm_id}")
                    results.put(("ok", response.status_code))
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


def hold_a_slot(db_name, qb_oauth, caches, pk):
    """Send one request (the fake holds it) and wait to be killed."""
    setup_django(db_name, qb_oauth, caches)
    from qb_oauth.models import QuickBooksConnection

    conn = QuickBooksConnection.objects.get(pk=pk)
    with conn.api_session() as session:
        session.get(f"companyinfo/{conn.realm_id}")
    time.sleep(60)
