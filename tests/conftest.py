"""Shared fixtures: tests keep to the Shapes world and tiny, seeded workloads."""

import os

# Two OpenMP threads on the project's CPU VMs intermittently stall small ops; tests run single-threaded.
os.environ.setdefault("OMP_NUM_THREADS", "1")
