"""Write one named section of bench/RESULTS.md, keeping the other benchmarks' sections."""

from __future__ import annotations

import datetime
import os
import platform
import re
from pathlib import Path

HEADER = ("# Benchmark results\n\nWritten by the scripts in `bench/` (`make bench`); each section "
          "says how it was produced. Timings are medians of repeated runs on the machine named in "
          "the section.\n")


def machine() -> str:
    """CPU model, logical cores, OS and the date, for a results header."""
    from pipelines.sweep.machine import cpu_name

    today = datetime.date.today().isoformat()
    return f"{cpu_name()}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}, {today}"


def write_section(path: str | Path, name: str, body: str) -> None:
    """Replace (or append) the section between `<!-- name -->` markers in `path`."""
    path = Path(path)
    text = path.read_text() if path.exists() else HEADER
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
