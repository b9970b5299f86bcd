"""One thread for the quantizers' many small tensor operations.

The quantizers work in cache-sized chunks (a quarter million elements): each torch call on a chunk
is too short to pay for a parallel region, and when another process holds a core the threads of
every region wait for the slowest one. Measured on a 4096x4096 mxint4_32 weight on a busy 2-core
machine: 0.24 s at one thread, 4.4 s at two (bench/bench_quantizer.py, contention section). One
thread is what the quantizer is fastest at wherever the machine is shared, as sweeps' machines are.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

# Rows are processed in chunks of about this many elements so that the dozen temporaries of the
# fp path stay in cache: on the CPU memory traffic, not arithmetic, bounds the quantizers.
CPU_CHUNK_ELEMENTS = 1 << 18


def chunk_elements(tensor: torch.Tensor) -> int:
    """Elements per chunk: cache-sized on the CPU; on a GPU the whole tensor (there every call's
    launch costs more than its memory traffic)."""
    return max(tensor.numel(), 1) if tensor.device.type != "cpu" else CPU_CHUNK_ELEMENTS


@contextmanager
def one_thread():
    """torch's intra-op threads set to 1 inside, restored after (process-wide: not for threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
