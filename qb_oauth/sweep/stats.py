"""The counts of one sweep, or of one fanned-out batch: each outcome a counter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

REFRESHED = "refreshed"
SKIPPED_LOCKED = "skipped_locked"
SKIPPED_FRESH = "skipped_fresh"
FAILED_UNAVAILABLE = "failed_unavailable"
FAILED_OTHER = "failed_other"
REAUTH_REQUIRED = "reauth_required"
#: Every outcome of one connection in a sweep; each is a counter of :class:`SweepRun`.
OUTCOMES = (
    REFRESHED,
    SKIPPED_LOCKED,
    SKIPPED_FRESH,
    FAILED_UNAVAILABLE,
    FAILED_OTHER,
    REAUTH_REQUIRED,
)


@dataclass
class SweepStats:
    """Counts of one sweep (or of one fanned-out batch)."""

    due: int = 0
    refreshed: int = 0
    skipped_locked: int = 0
    skipped_fresh: int = 0
    failed_unavailable: int = 0
    failed_other: int = 0
    reauth_required: int = 0
    warnings_sent: int = 0
    fanned_out: bool = False
    chunks: int = 0
    seconds: float = 0.0
    run_id: int | None = None

    def add(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)

    @property
    def processed(self) -> int:
        return sum(getattr(self, name) for name in OUTCOMES)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "due": self.due,
            **{name: getattr(self, name) for name in OUTCOMES},
            "warnings_sent": self.warnings_sent,
            "fanned_out": self.fanned_out,
            "chunks": self.chunks,
            "seconds": round(self.seconds, 3),
        }

    def summary(self) -> str:
        """The one summary line (no connection names, no tokens)."""
        head = f"Sweep #{self.run_id}" if self.run_id else "Sweep"
        if self.fanned_out and self.processed < self.due:
            return (
                f"{head}: handed {self.due} due connections to the cluster in "
                f"{self.chunks} tasks ({self.skipped_locked} skipped: refresh in progress), "
                f"{self.warnings_sent} expiry warnings sent."
            )
        return (
            f"{head}: {self.due} due, {self.refreshed} refreshed, "
            f"{self.skipped_locked} skipped (refresh in progress), "
            f"{self.skipped_fresh} skipped (no longer due), "
            f"{self.failed_unavailable} failed (Intuit unavailable), "
            f"{self.failed_other} failed (other), "
            f"{self.reauth_required} marked reauth required, "
            f"{self.warnings_sent} expiry warnings sent"
            + (f", fanned out in {self.chunks} tasks" if self.fanned_out else "")
            + (f", in {self.seconds:.1f} s." if self.seconds else ".")
        )
