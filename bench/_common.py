"""Benchmark helpers: medians of repeated timings, peak memory, machine description."""

import os
import platform
import resource
import statistics
import time


def timed(fn, repeats=5, warmup=1):
    """Median and all wall times (seconds) of `fn()` over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def peak_rss_mb():
    """Peak resident memory of this process so far, in MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine():
    return f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"
