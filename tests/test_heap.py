"""The worker's memory: the heap a close frees, handed back to the system (streams/close.py),
and the cycle collector kept off its hot path (streams/runner.py)."""
import subprocess
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


COLLECTOR_CHECK = """
import gc, weakref
from mqstream.streams.runner import YOUNG_COLLECTION_ALLOCATIONS, quiet_collector

made_before = [[]]  # a list holding a list: tracked by the collector (an empty dict would not be)
assert any(o is made_before for o in gc.get_objects())
quiet_collector()
assert gc.get_threshold()[0] == YOUNG_COLLECTION_ALLOCATIONS
assert not any(o is made_before for o in gc.get_objects()), "start-up objects are still scanned"

class Node:
    pass

cycle = Node()
cycle.itself = cycle
alive = weakref.ref(cycle)
del cycle
kept = [[] for _ in range(YOUNG_COLLECTION_ALLOCATIONS + 1000)]  # enough allocations for a young collection
assert alive() is None, "a cycle made after start-up was never collected"
print("ok")
"""


def test_the_workers_collector_skips_what_start_up_made_and_still_frees_later_cycles():
    # in a process of its own: the collector's settings are process-wide
    done = subprocess.run([sys.executable, "-c", COLLECTOR_CHECK], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
