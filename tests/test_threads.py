"""``ncdepth.threads``: the CLIs' thread defaults, the cgroup quota, and the user's own settings winning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ncdepth.threads import ENVIRONMENT_VARIABLES, SPIN_COUNT, available_cpus, cgroup_cpu_limit

# What a CLI process sees, imported the way the console scripts import it; ``order`` checks that the
# defaults ran before torch was imported (sys.modules keeps insertion order).
PROBE = """
import json, os, sys
from {module} import main
import torch
names = list(sys.modules)
print(json.dumps({{
    "wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    "spin_count": os.environ.get("GOMP_SPINCOUNT"),
    "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    "threads": torch.get_num_threads(),
    "threads_before_torch": names.index("ncdepth.threads") < names.index("torch"),
}}))
"""


def probe(
    extra_env: dict[str, str], module: str = "ncdepth.cli.report", cpus: set[int] | None = None
) -> dict[str, object]:
    """Run :data:`PROBE` in a fresh interpreter with the thread variables cleared, ``extra_env`` set and,
    when given, the CPU affinity ``cpus``."""
    env = {key: value for key, value in os.environ.items() if key not in ENVIRONMENT_VARIABLES}
    env.update(extra_env)
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus),
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_train_entry_point_gets_the_defaults_before_torch() -> None:
    seen = probe({}, module="ncdepth.cli.train")
    assert seen == {
        "wait_policy": "PASSIVE",
        "spin_count": SPIN_COUNT,
        "omp_num_threads": None,  # not exported: launchers that cap their workers' threads still do
        "threads": available_cpus(),
        "threads_before_torch": True,
    }


def test_threads_follow_the_cpu_affinity() -> None:
    first = min(os.sched_getaffinity(0))
    assert probe({}, cpus={first})["threads"] == 1


def test_the_users_own_settings_win() -> None:
    # torch caps a thread count above the machine's CPUs, so the user's value here is 1
    seen = probe({"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "ACTIVE"})
    assert (seen["wait_policy"], seen["omp_num_threads"], seen["threads"]) == ("ACTIVE", "1", 1)
    assert seen["spin_count"] is None  # a spin count would override the user's ACTIVE
    seen = probe({"GOMP_SPINCOUNT": "0"})
    assert (seen["wait_policy"], seen["spin_count"]) == (None, "0")
    assert probe({"MKL_NUM_THREADS": "1"})["threads"] == 1


def test_opt_out_leaves_torch_and_libgomp_alone() -> None:
    seen = probe({"NCDEPTH_THREAD_DEFAULTS": "0"})
    assert seen["wait_policy"] is None and seen["spin_count"] is None


def write_cpu_max(directory: Path, value: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cpu.max").write_text(value + "\n")


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({}, None),
        ({"": "max 100000", "a": "max 100000", "a/b": "max 100000"}, None),
        ({"": "max 100000", "a": "150000 100000", "a/b": "max 100000"}, 2),  # an ancestor's quota, rounded up
        ({"": "400000 100000", "a": "max 100000", "a/b": "100000 100000"}, 1),  # the smallest
        ({"a/b": "50000 100000"}, 1),  # half a CPU still runs one thread
    ],
)
def test_cgroup_cpu_limit(tmp_path: Path, files: dict[str, str], expected: int | None) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for relative, value in files.items():
        write_cpu_max(tmp_path / relative, value)
    assert cgroup_cpu_limit(tmp_path, membership="1:cpu:/\n0::/a/b\n") == expected
