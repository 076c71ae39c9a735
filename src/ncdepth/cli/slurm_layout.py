"""The rule that ties a Lightning DDP run to its Slurm layout.

Under Slurm, Lightning runs one process per Slurm task: ``trainer.devices`` must equal the tasks per
node and ``trainer.num_nodes`` (default 1) the number of nodes. ``hydra/launcher=slurm_ddp`` derives
the launcher's ``tasks_per_node``, ``gpus_per_node`` and ``nodes`` from those two keys, so they
cannot disagree; :func:`launcher_layout_error` and :func:`swept_layout_error` (before submitting)
and :func:`slurm_layout_error` (inside the job, from its Slurm environment) refuse a layout that
disagrees anyway.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser

LAYOUT_KEYS = ("trainer.devices", "trainer.num_nodes")
"""The trainer keys that fix a run's Slurm layout (tasks per node, nodes)."""


def device_count(devices: Any) -> int | None:
    """How many devices per node Lightning's ``devices`` asks for: an int ``n >= 0``, a string of
    digits, a list of device indices or a comma-separated string of them; ``None`` for ``auto`` and
    ``-1`` (every visible device: not known before the run) and for anything else."""
    if isinstance(devices, bool):
        return None
    if isinstance(devices, int):
        return devices if devices >= 0 else None
    if isinstance(devices, str):
        text = devices.strip()
        if "," in text:
            return len([part for part in text.split(",") if part.strip()])
        return int(text) if text.isdigit() else None
    if isinstance(devices, Sequence):
        return len(devices)
    return None


def _layout_error(
    trainer_cfg: Mapping[str, Any],
    tasks_per_node: int | None,
    nodes: int | None,
    tasks_key: str,
    nodes_key: str,
) -> str | None:
    """How ``trainer.devices`` / ``trainer.num_nodes`` disagree with a Slurm layout of
    ``tasks_per_node`` tasks on each of ``nodes`` nodes (named ``tasks_key``, ``nodes_key``), or
    ``None`` (also for a value that is not known: ``None``, ``devices: auto``)."""
    problems = []
    devices = trainer_cfg.get("devices", 1)
    count = device_count(devices)
    if count is not None and tasks_per_node is not None and count != tasks_per_node:
        problems.append(f"trainer.devices={devices} but {tasks_key}={tasks_per_node}")
    num_nodes = trainer_cfg.get("num_nodes", 1)
    if nodes is not None and num_nodes != nodes:
        problems.append(f"trainer.num_nodes={num_nodes} but {nodes_key}={nodes}")
    if not problems:
        return None
    return (
        f"{'; '.join(problems)}: under Slurm, Lightning runs one process per Slurm task, so "
        "trainer.devices must equal the tasks per node and trainer.num_nodes (default 1) the number "
        "of nodes; use hydra/launcher=slurm_ddp, which takes both from the trainer"
    )


def _slurm_int(environ: Mapping[str, str], name: str) -> int | None:
    """``environ[name]`` as an int; ``None`` when unset or not a plain integer."""
    value = environ.get(name, "").strip()
    return int(value) if value.isdigit() else None


def _slurm_tasks_per_node(environ: Mapping[str, str]) -> tuple[int | None, str]:
    """Tasks per node of the Slurm job and where that comes from: ``SLURM_NTASKS_PER_NODE``; else a
    uniform ``SLURM_TASKS_PER_NODE`` (``4`` or ``4(x2)``); else ``SLURM_NTASKS / SLURM_NNODES``."""
    per_node = _slurm_int(environ, "SLURM_NTASKS_PER_NODE")
    if per_node is not None:
        return per_node, "SLURM_NTASKS_PER_NODE"
    listed = environ.get("SLURM_TASKS_PER_NODE", "")
    if "," not in listed and listed.split("(x")[0].isdigit():
        return int(listed.split("(x")[0]), "SLURM_TASKS_PER_NODE"
    ntasks, nnodes = _slurm_int(environ, "SLURM_NTASKS"), _slurm_int(environ, "SLURM_NNODES")
    if ntasks is not None and nnodes and ntasks % nnodes == 0:
        return ntasks // nnodes, "SLURM_NTASKS/SLURM_NNODES"
    return None, ""


def slurm_layout_error(trainer_cfg: Mapping[str, Any], environ: Mapping[str, str]) -> str | None:
    """Inside a Slurm job whose tasks Lightning takes as its processes (``SLURM_JOB_ID`` and
    ``SLURM_NTASKS`` set, job name not ``bash`` / ``interactive``: Lightning's own test), a message
    naming ``trainer.devices`` / ``trainer.num_nodes`` (default 1) and the Slurm variable each
    disagrees with (tasks per node: ``SLURM_NTASKS_PER_NODE``, else derived from
    ``SLURM_TASKS_PER_NODE`` or ``SLURM_NTASKS / SLURM_NNODES``; nodes: ``SLURM_NNODES``, else
    ``SLURM_JOB_NUM_NODES``). ``None`` when they agree, outside such a job, or for a value not known
    before the run (``devices: auto`` or ``-1``). Pure: reads only its arguments."""
    if "SLURM_JOB_ID" not in environ or "SLURM_NTASKS" not in environ:
        return None
    if environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return None
    tasks_per_node, source = _slurm_tasks_per_node(environ)
    nodes_source = "SLURM_NNODES" if "SLURM_NNODES" in environ else "SLURM_JOB_NUM_NODES"
    return _layout_error(
        trainer_cfg,
        tasks_per_node,
        _slurm_int(environ, nodes_source),
        tasks_key=f"this Slurm job's {source}",
        nodes_key=f"this Slurm job's {nodes_source}",
    )


def launcher_layout_error(launcher_cfg: Mapping[str, Any], trainer_cfg: Mapping[str, Any]) -> str | None:
    """A message naming the keys when a Slurm launcher's ``tasks_per_node`` / ``nodes`` (default 1)
    disagree with ``trainer.devices`` / ``trainer.num_nodes`` (default 1), else ``None``."""
    return _layout_error(
        trainer_cfg,
        launcher_cfg.get("tasks_per_node", 1),
        launcher_cfg.get("nodes", 1),
        tasks_key="hydra.launcher.tasks_per_node",
        nodes_key="hydra.launcher.nodes",
    )


def swept_layout_error(task_overrides: Sequence[str], sweeper_params: Mapping[str, Any]) -> str | None:
    """A message when the jobs of a Slurm multirun would not share ``trainer.devices`` /
    ``trainer.num_nodes``: a sweep of either among the command-line overrides, or either in
    ``hydra.sweeper.params`` (applied to each job, never to the base config). submitit reads the
    launcher's layout once, from the base config, for every job of the sweep."""
    parser = OverridesParser.create()
    varying = [
        override.input_line
        for override in parser.parse_overrides(list(task_overrides))
        if override.key_or_group in LAYOUT_KEYS and override.is_sweep_override()
    ]
    varying += [
        f"hydra.sweeper.params['{key}']" for key in sweeper_params if str(key).lstrip("+~") in LAYOUT_KEYS
    ]
    if not varying:
        return None
    return (
        f"{', '.join(varying)}: the Slurm launcher takes the tasks per node and the nodes of every "
        f"job from the sweep's base config, so {' and '.join(LAYOUT_KEYS)} must not vary between jobs; "
        "set them once on the command line (one sweep per layout)"
    )
