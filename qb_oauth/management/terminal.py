"""Text from outside (Intuit's company names and errors, user names) made safe for a terminal.

An ESC sequence in a company name would drive the operator's terminal: set its
title, clear the screen, rewrite earlier lines, or on some terminals answer back
as if typed. The commands' plain-text output passes every such string through
:func:`terminal_safe`. JSON output needs nothing more: ``json.dumps`` escapes every
control character (``\\u001b``).
"""

from __future__ import annotations

from typing import Any

#: Tab, line feed, vertical tab, form feed, carriage return and NEL read as a space.
_AS_SPACE = "\t\n\x0b\x0c\r\x85"

#: C0 controls (U+0000 to U+001F), DEL (U+007F) and C1 controls (U+0080 to U+009F):
#: removed, except the ones above, which become a space.
_TABLE = {
    code: (" " if chr(code) in _AS_SPACE else None)
    for code in (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0))
}


def terminal_safe(value: Any) -> str:
    """``str(value)`` without terminal control characters; tabs and line breaks become spaces."""
    return str(value).translate(_TABLE)
