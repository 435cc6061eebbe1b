"""ops/allocator.py: freed large tensors are reused instead of being faulted in again on every allocation."""
import subprocess
import sys

import pytest

PROGRAM = """
import resource, sys, torch
from diffaug_fast.ops.allocator import keep_freed_memory
tuned = keep_freed_memory() if sys.argv[1] == "tuned" else False
x = torch.empty(8 << 20).fill_(1.0)  # 32 MB
del x
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    x = torch.empty(8 << 20).fill_(1.0)
    del x
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode, env=None):
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True,
                         env=env).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_reused_not_faulted_in_again():
    tuned, faults = _faults("tuned")
    _, plain = _faults("plain")
    assert tuned
    # 50 x 32 MB of fresh pages is ~410 000 faults of 4 kB; reused memory is faulted in again a few times at
    # most (measured: 0 to 3 x 8 192)
    assert plain > 200_000 and faults < plain / 4, (faults, plain)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_users_own_malloc_setting_is_left_alone():
    import os

    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    tuned, _ = _faults("tuned", env)
    assert not tuned
