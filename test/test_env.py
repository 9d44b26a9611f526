"""Tests of icefall/env.py: the memory settings of CPU training (malloc, oneDNN cache)."""
import os
import platform
import subprocess
import sys
import textwrap

import pytest

# A training-step-like loop with activations above glibc's mmap threshold (32 MiB); prints the
# median of the minor page faults of its last 12 steps. With the setting the heap settles within
# a few steps, but an occasional later step still grows it by one to three tensors (seen at
# steps 10-14 in 3 of 8 runs, 12.5k-37.5k faults): the median is 0 all the same, where the control
# re-faults every tensor of every step.
_STEPS = textwrap.dedent("""
    import resource
    from icefall.env import keep_freed_memory
    print("set" if keep_freed_memory() else "unset")
    import torch
    w = torch.randn(64, 64)
    faults = []
    for step in range(16):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        h = torch.randn(200000, 64)  # 51 MB
        y = (h @ w).relu() * 2 + 1
        y.sum().item()
        del h, y
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    last = sorted(faults[-12:])
    print((last[5] + last[6]) // 2)
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
    # each step makes five 51 MB tensors: re-faulted, that is > 60k faults of 4 KiB pages per step
    assert faults < 2000, faults
    state, faults = _last_steps_faults("0")  # the control: glibc's default re-faults every step
    assert state == "unset"
    assert faults > 20000, faults


# Training steps of one convolution at 80 input lengths, as bucketed speech batches give; prints
# the growth of the resident size over them, in MB.
_SHAPES = textwrap.dedent("""
    import sys
    from icefall.env import drop_onednn_primitive_cache
    if sys.argv[1] == "drop":
        assert drop_onednn_primitive_cache()
    import torch
    torch.set_num_threads(1)
    def rss_mb():
        return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
    conv = torch.nn.Conv2d(8, 32, 3, stride=2)
    def step(frames):
        conv(torch.randn(4, 8, frames, 40, requires_grad=True)).sum().backward()
    step(100)
    start = rss_mb()
    for frames in range(100, 180):
        step(frames)
    print(rss_mb() - start)
""")


@pytest.mark.skipif(platform.system() != "Linux", reason="reads /proc")
def test_dropping_onednn_primitive_cache_stops_growth_with_changing_shapes():
    env = {k: v for k, v in os.environ.items() if not k.endswith("PRIMITIVE_CACHE_CAPACITY")}
    growth = {}
    for mode in ("keep", "drop"):
        out = subprocess.run([sys.executable, "-c", _SHAPES, mode], env=env, capture_output=True,
                             text=True, check=True).stdout
        growth[mode] = float(out.split()[-1])
    assert growth["keep"] > 20, growth  # the control: one cached primitive per shape
    assert growth["drop"] < growth["keep"] / 3, growth


def test_drop_onednn_primitive_cache_leaves_a_user_setting(monkeypatch):
    from icefall.env import drop_onednn_primitive_cache

    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")
    assert not drop_onednn_primitive_cache()
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "64"
