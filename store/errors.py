"""The one family of user errors: what the user typed or named cannot be used, and what to do.

Every layer raises its own subclass (a bad format string, a corpus too short, a store that is not
one, a registered version that does not exist); the CLI turns any InputError into one line and
exit status 2. Anything else is a bug or an outage: one line and exit status 1, the traceback
with `advisor --debug` or PTQ_ADVISOR_DEBUG=1.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input or an unusable resource the user named; the message says what to do.

    A ValueError, as bad input is in Python; but not every ValueError is the user's: one raised by
    numpy or pandas is a bug, and the CLI says so (exit 1) instead of blaming the input."""
