"""Resident memory of this process (Linux), for the benchmarks that measure CPU peaks in a fresh
child process each.

Why not ru_maxrss alone: Linux carries a process's ru_maxrss across fork and exec, so a child
started by a parent that once held more reports the parent's peak, not its own; the kernel's
VmHWM counter belongs to the new process and can be reset (/proc/self/clear_refs)."""

from __future__ import annotations

import os
import resource

# glibc: map every block of 128 KiB or more on its own and unmap it when freed, so the resident
# peak is what was held at once, not what the heap kept of freed blocks (glibc's dynamic default
# keeps freed blocks up to 32 MiB, and how much depends on timing)
NO_RETENTION = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def rss() -> int:
    """Resident bytes now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (Linux ≥ 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss(reset: bool) -> int:
    """Peak resident bytes since `reset_peak()` (its result passed in), else since the process
    began (ru_maxrss, which may include the parent's peak: see above)."""
    if reset:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
