"""The scheduled refresh: find the connections that are due and refresh each one once.

:mod:`qb_oauth.tasks` holds the thin django-q2 entry points; this package holds
the work, so the ``qb_refresh`` command, the tasks and the tests share it:

* :mod:`.claims`: what is due, and the claim that keeps two sweeps apart;
* :mod:`.refresh`: one connection, re-checked, then the single-flight refresh;
* :mod:`.pool`: a bounded pool of threads over a lazy source;
* :mod:`.run`: one run, here or fanned out to the cluster, and its ``SweepRun``;
* :mod:`.expiry`: the ``refresh_token_expiring`` warnings;
* :mod:`.stats`: the counts.

How two sweeps (or many cluster workers) never refresh one connection twice,
and what each outcome means: docs/scheduled-refresh.md.
"""

from .claims import (
    MODES,
    Candidate,
    candidates_query,
    claim_batches,
    iter_candidates,
    iter_pks,
    new_claim,
    release,
)
from .expiry import send_expiry_warnings
from .pool import run_concurrently
from .refresh import refresh_candidate
from .run import CHUNK_TASK, cluster_configured, refresh_batch, run_sweep
from .stats import (
    FAILED_OTHER,
    FAILED_UNAVAILABLE,
    OUTCOMES,
    REAUTH_REQUIRED,
    REFRESHED,
    SKIPPED_FRESH,
    SKIPPED_LOCKED,
    SweepStats,
)

__all__ = [
    "CHUNK_TASK",
    "FAILED_OTHER",
    "FAILED_UNAVAILABLE",
    "MODES",
    "OUTCOMES",
    "REAUTH_REQUIRED",
    "REFRESHED",
    "SKIPPED_FRESH",
    "SKIPPED_LOCKED",
    "Candidate",
    "SweepStats",
    "candidates_query",
    "claim_batches",
    "cluster_configured",
    "iter_candidates",
    "iter_pks",
    "new_claim",
    "refresh_batch",
    "refresh_candidate",
    "release",
    "run_concurrently",
    "run_sweep",
    "send_expiry_warnings",
]
