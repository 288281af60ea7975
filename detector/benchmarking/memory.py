"""Peak memory of one call: CUDA allocator statistics, or on the CPU the profiler's record of
every tensor allocation and free (deterministic, unlike the process RSS)."""
from __future__ import annotations

import os
from typing import Callable

import torch


def peak_memory_bytes(run: Callable[[], object], device: torch.device) -> int:
    """Peak bytes of tensor memory held during `run()` above what was held before it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    # Each op's own allocations (its children's excluded) are positive, frees ("[memory]"
    # events) negative; in time order, the running sum's maximum is the peak.
    events = sorted((e.time_range.start, e.self_cpu_memory_usage) for e in prof.events()
                    if e.self_cpu_memory_usage)
    held = peak = 0
    for _, change in events:
        held += change
        peak = max(peak, held)
    return int(peak)


def resident_bytes() -> int:
    """Resident set size of this process (Linux), for growth over many iterations."""
    with open(f"/proc/{os.getpid()}/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
