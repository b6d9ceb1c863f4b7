"""The heap a close frees, handed back to the system (streams/close.py)."""
import sys

import pytest

from mqstream.streams.close import release_free_memory


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim and /proc: Linux only")
def test_values_freed_amid_the_heap_leave_resident_memory_once_released():
    values = [bytes(25_000) + bytes([i % 256]) for i in range(16_000)]  # a chunk's item models, ~400 MB
    kept = values[::2]  # what frees half of them leaves holes no top-of-heap trim can return
    del values
    before = resident_bytes()
    assert release_free_memory()
    assert before - resident_bytes() > 100 * 2**20  # of the ~200 MB freed
    del kept  # held until here: the holes stay holes while measured
