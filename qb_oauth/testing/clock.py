"""The fake Intuit's clock: real time plus an offset a test can move."""

from __future__ import annotations

import threading
import time


class FakeClock:
    """Epoch seconds for the fake Intuit.

    By default it follows ``time.time()`` plus an offset, so libraries that
    move ``time.time()`` (time-machine, freezegun) move it too, and
    ``advance()``/``set()`` move it further. With ``frozen=True`` it stands
    still at ``start`` (default: now) and only ``advance()``/``set()`` move
    it: tests that must not depend on wall-clock speed use that.
    """

    def __init__(self, start: float | None = None, *, frozen: bool = False) -> None:
        self._lock = threading.Lock()
        self.frozen = frozen
        if frozen:
            self._fixed = float(time.time() if start is None else start)
            self._offset = 0.0
        else:
            self._fixed = 0.0
            self._offset = 0.0 if start is None else float(start) - time.time()

    def now(self) -> float:
        """The fake time, in epoch seconds."""
        with self._lock:
            if self.frozen:
                return self._fixed
            return time.time() + self._offset

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds`` (negative moves it back); returns the new time."""
        with self._lock:
            if self.frozen:
                self._fixed += seconds
            else:
                self._offset += seconds
        return self.now()

    def set(self, epoch: float) -> None:
        """Jump to ``epoch`` seconds (a frozen clock stays frozen there)."""
        with self._lock:
            if self.frozen:
                self._fixed = float(epoch)
            else:
                self._offset = float(epoch) - time.time()

    def __repr__(self) -> str:
        mode = "frozen" if self.frozen else "following time.time()"
        return f"<FakeClock {self.now():.3f} ({mode})>"
