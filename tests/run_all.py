"""`make test`: the whole suite on SQLite, then on PostgreSQL.

When PostgreSQL is not reachable the PostgreSQL run is skipped with a loud
warning, except under CI=true, where that is a failure. Extra arguments go to
both pytest runs.
"""

import os
import socket
import subprocess
import sys

HOST = os.environ.get("QB_TEST_PG_HOST", "127.0.0.1")
PORT = int(os.environ.get("QB_TEST_PG_PORT", "5432"))


def postgres_reachable() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=2):
            return True
    except OSError:
        return False


def run(label: str, env_extra: dict) -> int:
    print(f"\n=== qb_oauth tests on {label} ===", flush=True)
    env = {**os.environ, **env_extra}
    return subprocess.call([sys.executable, "-m", "pytest", *sys.argv[1:]], env=env)


def main() -> int:
    ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    results = {"SQLite": run("SQLite", {"QB_TEST_DB": "sqlite"})}
    if postgres_reachable():
        results["PostgreSQL"] = run("PostgreSQL", {"QB_TEST_DB": "postgres"})
    else:
        banner = "!" * 72
        print(
            f"\n{banner}\n!! PostgreSQL is not reachable at {HOST}:{PORT}.\n"
            "!! The concurrency proofs need real row locks: only SQLite was tested.\n"
            f"{banner}",
            flush=True,
        )
        if ci:
            print("CI=true: a missing PostgreSQL is a failure.")
            results["PostgreSQL"] = 1
    print("\n=== summary ===")
    for label, code in results.items():
        print(f"{label}: {'passed' if code == 0 else f'FAILED (exit {code})'}")
    return 0 if all(code == 0 for code in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
