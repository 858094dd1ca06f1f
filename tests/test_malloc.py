"""unclip.train.malloc: glibc's allocator told to keep freed memory, measured in minor page faults."""

import os
import platform
import subprocess
import sys

import pytest

from unclip.train.malloc import keep_freed_memory

# A few training steps of a small convolution net in a fresh process; prints minor page faults per step after three
# warm-up steps, with (argv[1] == "1") or without the allocator settings.
STEPS = """
import resource, sys, torch
torch.set_num_threads(1)
if sys.argv[1] == "1":
    from unclip.train.malloc import keep_freed_memory
    assert keep_freed_memory()
net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(32, 32, 3, padding=1))
x = torch.randn(16, 3, 32, 32)
for i in range(13):
    if i == 3:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    net(x).square().mean().backward()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


def _faults_per_step(tuned: bool) -> float:
    out = subprocess.run([sys.executable, "-c", STEPS, "1" if tuned else "0"], check=True, capture_output=True,
                         text=True, env=os.environ | {"OMP_NUM_THREADS": "1"})
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_training_steps_stop_faulting_pages_back_in():
    default, tuned = _faults_per_step(False), _faults_per_step(True)
    # glibc's defaults hand the activations' pages back and fault them in again every step (about 1,500 here)
    assert tuned < default / 3, (default, tuned)


def test_elsewhere_it_does_nothing(monkeypatch):
    monkeypatch.setattr("sys.platform", "darwin")
    assert keep_freed_memory() is False
