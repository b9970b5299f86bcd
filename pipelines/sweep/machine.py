"""What machine measured a run: CPU model, cores, torch threads and the accelerator, as one line.

A sweep's wall time means nothing without the machine it ran on (one format of Qwen2.5-0.5B takes
~9 minutes on a 2-core EPYC, about twice that on a 2.0 GHz Xeon), so every variant run carries
this line as a tag; the study's cost table groups by it.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

MACHINE_TAG = "ptq.machine"
EVAL_DTYPE_TAG = "ptq.eval_dtype"  # asked for; a run's eval_bits metric says what it got


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def describe(device: str = "cpu") -> str:
    """One line: CPU, logical cores, torch's thread count, and the GPU when `device` is CUDA."""
    import torch

    line = f"{cpu_name()}, {os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads"
    if str(device).startswith("cuda"):
        line += f", {torch.cuda.get_device_name(torch.device(device))}"
    return line


def run_tags(device: str, eval_dtype: str) -> dict:
    """The tags every measuring run carries: the machine (with its GPU) and the evaluation dtype asked for."""
    return {MACHINE_TAG: describe(device), EVAL_DTYPE_TAG: eval_dtype}
