"""Keep tokens out of error pages, error e-mails and error trackers.

:func:`holds_tokens` marks a function whose locals hold a token (a refresh
token being used, Intuit's answer being stored, an ``Authorization`` header):

* it is Django's ``sensitive_variables()``: Django's exception reporter
  filter then hides every local of the function and of the frames it calls,
  in error e-mails and wherever the filter is active;
* when an exception leaves the function, the locals of the function's frame
  and of every frame below it in the traceback (and in its ``__cause__`` /
  ``__context__`` chain) are cleared. Django applies its filter only when
  ``DEBUG`` is off, and error trackers read frame locals themselves: a frame
  that holds nothing shows nothing, whatever renders it.

The price is that a traceback through these functions shows their frames
and lines but not their variables.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from django.views.decorators.debug import sensitive_variables

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["holds_tokens", "scrub_traceback"]


def scrub_traceback(error: BaseException) -> None:
    """Clear the locals of the frames in ``error``'s traceback and in its chain.

    Frames still running (the caller's) cannot be cleared and are left alone.
    """
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        exc = pending.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)
        pending.extend((exc.__cause__, exc.__context__))


def holds_tokens(func: F) -> F:
    """Decorator for a function whose locals hold a token; see the module docstring."""
    hidden = sensitive_variables()(func)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return hidden(*args, **kwargs)
        except BaseException as error:
            del args, kwargs
            scrub_traceback(error)
            raise

    return wrapper  # type: ignore[return-value]
