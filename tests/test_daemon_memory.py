"""agent.daemon.memory: free heap pages really go back to the OS."""

from __future__ import annotations

from pathlib import Path

from agent.daemon import memory


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_trim_returns_free_pages_in_the_middle_of_the_heap() -> None:
    memory.trim()
    # 24 MiB of malloc'd blocks (4 KB each: above pymalloc's 512 bytes, below glibc's
    # mmap threshold, so they live in the heap), then all but one in 16 freed: the heap
    # cannot shrink from its top, so glibc alone keeps the freed pages resident.
    blocks = [bytearray(4000) for _ in range(6000)]
    kept = blocks[::16]
    del blocks
    before = rss_kib()
    assert memory.trim() is True  # glibc here (CI runs Debian)
    after = rss_kib()
    assert before - after > 12 * 1024, (before, after)
    assert all(len(b) == 4000 for b in kept)  # what is in use is untouched
