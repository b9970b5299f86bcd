"""Named points where a test can kill the process, to prove that a resume repairs what it left.

`PTQ_ADVISOR_FAULT=<name>` makes `fault_point(name)` end the process at once, as a SIGKILL would
(no exception handler, no atexit, no `finally`). Unset, a fault point costs one dict lookup.
"""

from __future__ import annotations

import os


def fault_point(name: str) -> None:
    if os.environ.get("PTQ_ADVISOR_FAULT") == name:
        os._exit(137)
