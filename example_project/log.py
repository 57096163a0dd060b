"""A logging filter for the example site: hides OAuth values in request lines.

The development server logs every request line, and Intuit's redirect back
carries a one-time ``code`` and the ``state`` in its query string. They are
single use, but a log is no place for them (production servers log query
strings too: mask them there the same way).
"""

import logging
import re

_SECRET_PARAMS = re.compile(r"\b(code|state)=[^&\s\"]+")


class MaskOAuthQuery(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(
                _SECRET_PARAMS.sub(r"\1=…", a) if isinstance(a, str) else a for a in record.args
            )
        if isinstance(record.msg, str):
            record.msg = _SECRET_PARAMS.sub(r"\1=…", record.msg)
        return True
