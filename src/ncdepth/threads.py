"""Thread defaults for the command-line tools that survive a shared machine.

PyTorch's defaults assume the machine is the process's own: one intra-op thread per physical core of
the node (whatever the process's CPU affinity or cgroup quota) and libgomp's default wait policy, under
which an idle thread spins before it sleeps. Beside other busy processes (a laptop, a shared node, a
parallel sweep, a Slurm job limited to a few CPUs) every parallel region then waits for its slowest
thread to get a time slice, and small kernels run many times slower than on one thread.

:func:`configure` is called by ``ncdepth.cli`` before any entry point imports torch:

* ``OMP_WAIT_POLICY=PASSIVE`` (threads waiting at a barrier sleep instead of spinning) with
  ``GOMP_SPINCOUNT=10000`` (libgomp's threads first spin about 100 microseconds, then sleep), set in the
  environment, which libgomp reads when it loads, so child processes (data-loader and sweep workers)
  inherit them. libgomp's default spins about 3 ms before sleeping, which beside busy processes makes each
  parallel region wait for time slices; a pure ``PASSIVE`` (no spin) makes each of the many small parallel
  regions of the NC analysis pay a wake-up instead (four times slower on a quiet 2-core machine,
  measured); a spin of 1,000 (10 microseconds) still made the metrics' small kernels as slow on two
  threads as on one (``benchmarks/README.md``);
* ``torch.set_num_threads(n)`` with ``n`` = :func:`available_cpus`: the CPUs this process may run on
  (``os.sched_getaffinity``), capped by the cgroup v2 CPU quota (``cpu.max`` of the process's cgroup and
  its ancestors). This is not exported as ``OMP_NUM_THREADS``, so launchers that cap their workers'
  threads (joblib's ``cpu_pool``, Slurm's ``OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK``) still do.

A value the user set wins: if ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is set, neither is touched (a
spin count would override the user's policy), and the thread count is left to torch when
``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` is set (torch reads them itself). ``NCDEPTH_THREAD_DEFAULTS=0``
leaves both to torch and libgomp (the behaviour before these defaults). This module imports only the
standard library; torch is imported only to set the thread count.
"""

from __future__ import annotations

import math
import os
from collections.abc import MutableMapping
from pathlib import Path

WAIT_POLICY = "PASSIVE"
SPIN_COUNT = "10000"  # libgomp spins ~100,000 times a millisecond: about 100 microseconds
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
THREAD_COUNT_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
OPT_OUT_VARIABLE = "NCDEPTH_THREAD_DEFAULTS"
ENVIRONMENT_VARIABLES = (*THREAD_COUNT_VARIABLES, *WAIT_VARIABLES, OPT_OUT_VARIABLE)
"""Every variable :func:`configure` reads: clear them to see its defaults."""
CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, membership: str | None = None) -> int | None:
    """The CPUs the cgroup v2 quota allows, rounded up (``cpu.max`` = ``QUOTA PERIOD``), the smallest
    over the process's cgroup and its ancestors; ``None`` without a quota or without cgroup v2.

    ``membership`` is the text of ``/proc/self/cgroup`` (read when ``None``); its ``0::PATH`` line names
    the process's cgroup below ``root``."""
    if membership is None:
        try:
            membership = Path("/proc/self/cgroup").read_text()
        except OSError:
            membership = ""
    relative = next((line[3:] for line in membership.splitlines() if line.startswith("0::")), "/")
    directory = root / relative.strip().lstrip("/")
    limits = []
    for candidate in (directory, *directory.parents):
        try:
            quota, period = (candidate / "cpu.max").read_text().split()[:2]
        except (OSError, ValueError):
            quota = "max"
        if quota != "max":
            limits.append(max(1, math.ceil(int(quota) / int(period))))
        if candidate == root:
            break
    return min(limits, default=None)


def available_cpus() -> int:
    """The CPUs this process may use: its affinity mask, capped by its cgroup's CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows: no affinity mask
        cpus = os.cpu_count() or 1
    return min(cpus, cgroup_cpu_limit() or cpus)


def user_set(environ: MutableMapping[str, str], name: str) -> bool:
    """Whether ``name`` is set to a non-blank value (libgomp ignores an empty one)."""
    return bool(environ.get(name, "").strip())


def configure(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Apply the defaults the user has not overridden (see the module docstring); returns what was set,
    e.g. ``{"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "10000", "threads": "2"}``. Call it before torch
    is imported: libgomp reads its variables once, when it loads."""
    if environ.get(OPT_OUT_VARIABLE, "").strip() == "0":
        return {}
    applied = {}
    if not any(user_set(environ, name) for name in WAIT_VARIABLES):
        environ["OMP_WAIT_POLICY"] = applied["OMP_WAIT_POLICY"] = WAIT_POLICY
        environ["GOMP_SPINCOUNT"] = applied["GOMP_SPINCOUNT"] = SPIN_COUNT
    if not any(user_set(environ, name) for name in THREAD_COUNT_VARIABLES):
        import torch

        threads = available_cpus()
        torch.set_num_threads(threads)
        applied["threads"] = str(threads)
    return applied
