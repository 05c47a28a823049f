"""Refusing, in one line, a request that cannot fit in memory, before anything is allocated.

An oversized request (`--num-patches 1000000000`) otherwise grows until the kernel's OOM killer ends it,
minutes later, endangering every other process on the machine.
"""

import os
import pathlib

from energy_models.errors import UserError


def available_bytes():
    """Memory this process can still take: the kernel's MemAvailable, capped by a cgroup (container)
    limit when one is set; None when neither can be read."""
    found = []
    try:
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            text = pathlib.Path(limit).read_text().strip()
            if text != "max" and int(text) < 1 << 60:
                found.append(int(text) - int(pathlib.Path(usage).read_text()))
        except (OSError, ValueError):
            continue
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError):
            return None
    return max(min(found), 0)


def _size(n):
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.3g} {unit}" if unit != "bytes" else f"{int(n)} bytes"
        n /= 1000


def check_fits(count, bytes_per_item, copies, flag, what):
    """Raises a one-line `UserError` when `copies` arrays of `count` items of `bytes_per_item` bytes
    (the peak of the command that asks for them) exceed the memory available now.

    Args:
      count: the number the user asked for (e.g. --num-patches).
      bytes_per_item: bytes of one item (a 28 x 28 float32 patch: 3,136).
      copies: how many such arrays the command holds at its peak.
      flag: the flag to lower, e.g. "--num-patches".
      what: what one item is, e.g. "28x28 float32 patches".
    """
    needed = int(count) * int(bytes_per_item) * int(copies)
    available = available_bytes()
    if available is None or needed <= available:
        return
    most = max(int(available // (bytes_per_item * copies)), 0)
    raise UserError(f"{flag} {count} needs about {_size(needed)} of memory ({copies} copies of {count} "
                    f"{what}), but {_size(available)} is available; lower {flag} (at most about {most:,} "
                    f"here)")
