"""Tests of icefall/env.py: the CPU allocator setting for training."""
import os
import platform
import subprocess
import sys
import textwrap

import pytest

# A training-step-like loop with activations above glibc's mmap threshold (32 MiB); prints the
# minor page faults of its last two steps.
_STEPS = textwrap.dedent("""
    import resource, sys
    from icefall.env import keep_freed_memory
    print("set" if keep_freed_memory() else "unset")
    import torch
    w = torch.randn(64, 64)
    faults = []
    for step in range(8):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        h = torch.randn(200000, 64)  # 51 MB
        y = (h @ w).relu() * 2 + 1
        y.sum().item()
        del h, y
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    print(sum(faults[-2:]))
""")


def _last_steps_faults(keep: str):
    env = dict(os.environ, ICEFALL_KEEP_FREED_MEMORY=keep)
    out = subprocess.run([sys.executable, "-c", _STEPS], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_keep_freed_memory_removes_page_faults_of_repeated_steps():
    state, faults = _last_steps_faults("1")
    assert state == "set"
    # 2 steps x (51 MB + 51 MB + 51 MB) would be ~75k faults of 4 KiB pages if re-faulted
    assert faults < 2000, faults
    state, faults = _last_steps_faults("0")  # the control: glibc's default re-faults every step
    assert state == "unset"
    assert faults > 20000, faults
