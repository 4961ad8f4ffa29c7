"""The one exception a user sees as a message, not a traceback.

Anything the user can fix (a config value, a missing file, a missing key, a malformed manifest)
raises `UserError`; the command line prints its text and exits non-zero before any money is spent.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake in the user's input, explained in one message."""


def suggest(given: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when `given` looks like a typo of one of `choices`, else ''."""
    close = difflib.get_close_matches(given, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class NotTaken(UserError):
    """A value the model does not take (a parameter, field, value, mode or combination of them).

    In a sweep across unlike models such a job can be skipped rather than end the plan
    (`on_invalid=skip`); any other mistake (a missing file, a typo in a setting) always ends it.
    """
