"""Sweeps on one machine share its cores instead of each taking all of them.

Each local sweep registers itself (a file named after its pid under the cache root) while it runs
and takes cores // (live sweeps) torch threads, never more than it was given. Two sweeps that
each took every core ran 3.2x slower together than one alone (torch's threads wait on each other
at every parallel region); with a share each they run side by side.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

from store.paths import cache_root
from store.run_claims import pid_alive


def live_sweeps(folder) -> int:
    """Registered sweeps whose process still runs; entries of dead ones are removed."""
    count = 0
    for entry in folder.glob("*.sweep"):
        pid = entry.stem
        if pid.isdigit() and pid_alive(int(pid)):
            count += 1
        else:
            entry.unlink(missing_ok=True)
    return count


@contextmanager
def fair_share_of_cores():
    """Inside: torch uses at most cores // live sweeps threads (restored after); yields that number."""
    import torch

    folder = cache_root() / "running-sweeps"
    folder.mkdir(parents=True, exist_ok=True)
    me = folder / f"{os.getpid()}.sweep"
    me.write_text("")
    before = torch.get_num_threads()
    try:
        share = max(1, (os.cpu_count() or 1) // max(1, live_sweeps(folder)))
        torch.set_num_threads(min(before, share))
        yield min(before, share)
    finally:
        torch.set_num_threads(before)
        me.unlink(missing_ok=True)
