"""A URL's password, replaced: the one rule both error messages and recorded command lines use.

A store URL may carry its password (``postgresql://shim:PASSWORD@db/ledger`` or libpq's
``?password=``). Whatever shows a URL (an error line, an event's recorded command line,
the state dir's binding) shows it with ``<redacted>`` instead, so a password typed once is
never printed or kept for good. Kept here, in adapters, so that cli/redaction.py and the
store adapters share it without adapters importing cli.
"""

from __future__ import annotations

import re

REDACTED = "<redacted>"

# scheme://user:PASSWORD@ anywhere in a text (an argument may hold several URLs).
_USERINFO_PASSWORD = re.compile(r"([A-Za-z][\w+.-]*://[^/\s:@]*:)[^/\s@]*@")
# libpq's password as a query parameter of a URL: ?password=... or &password=...
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&\s]*", re.IGNORECASE)


def redact_url_passwords(text: str) -> str:
    """``text`` with every URL's userinfo password replaced (the query is left alone)."""
    return _USERINFO_PASSWORD.sub(rf"\1{REDACTED}@", text)


def redact_url(url: str) -> str:
    """A URL as it may be shown: its password, in the userinfo or the query, replaced."""
    return _QUERY_PASSWORD.sub(rf"\1{REDACTED}", redact_url_passwords(url))
