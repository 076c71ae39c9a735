"""The error contract of every command: a wrong input ends the command with exit status 2 and one
line on stderr that names it (the key, the group option or the file, with close matches where
there are any), before any file is written, and leaves no directory behind.

:func:`run_hydra_app` runs a Hydra app (``ncdepth-train``, ``-ufm``, ``-kernels``) under it:

* Hydra's composition errors (an unknown key ``model.depht=3``, ``foo=1``; an unknown group option
  ``model=resnet999`` or experiment; an override that does not parse) and OmegaConf's (an
  interpolation that does not resolve), which Hydra would print in 6 to 12 lines with exit 1;
* an ``OSError`` before the app's work starts: a run directory that cannot be created or written
  (read-only, under ``/proc``, below a file);
* the app's own refusals (``SystemExit(2)`` after its one line).

In each case the directories Hydra created for the run (``outputs/DATE/TIME``, noted by the Hydra
callback :class:`NewRunDirectory` before Hydra creates them) are removed again when they hold no
file. :func:`one_line_os_error` is the one-line form of an ``OSError`` (``ncdepth-report --out``).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from hydra.errors import HydraException, MissingConfigException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from ncdepth.validation import did_you_mean

BAD_INPUT = 2
"""The exit status of a refused input."""

_new_directories: list[Path] = []
"""The topmost directories that Hydra is about to create for this process's run."""


class NewRunDirectory(Callback):
    """Hydra callback (``hydra.callbacks`` of every app's config): notes the topmost missing
    directory of the run directory before Hydra creates it, for :func:`run_hydra_app` to remove
    when the run is refused. Multiruns are left alone: a refused job records why in its own
    directory."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = Path(str(config.hydra.run.dir)).absolute()
        missing = [path for path in (run_dir, *run_dir.parents) if not path.exists()]
        if missing:
            _new_directories.append(missing[-1])


def run_hydra_app(prog: str, app: Callable[[], Any]) -> None:
    """Run the ``hydra.main`` function ``app`` of the command ``prog`` under the error contract
    (module docstring). Other errors go through as they are, with their traceback."""
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its errors instead of printing them, exit 1
    try:
        app()
    except SystemExit as stop:
        if stop.code == BAD_INPUT:
            _remove_new_directories()
        raise
    except (HydraException, OmegaConfBaseException) as error:
        refuse(prog, one_line_config_error(error))
    except OSError as error:
        refuse(prog, f"{one_line_os_error(error)} (choose another hydra.run.dir)")


def refuse(prog: str, message: str) -> NoReturn:
    """Print ``prog: error: message``, remove the run's new empty directories and exit 2."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    _remove_new_directories()
    raise SystemExit(BAD_INPUT)


def one_line_config_error(error: HydraException | OmegaConfBaseException) -> str:
    """One line naming the unknown key or group option of a config error, with close matches."""
    if isinstance(error, MissingConfigException) and error.options is not None and error.missing_cfg_file:
        group, _, name = str(error.missing_cfg_file).rpartition("/")
        if group:
            options = sorted(error.options)
            return (
                f"{group}={name}: no such option of the config group {group}"
                f"{did_you_mean(name, options, f'{group}=')}; options: {', '.join(options)}"
            )
    cause = error.__cause__ if isinstance(error.__cause__, OmegaConfBaseException) else error
    full_key = getattr(cause, "full_key", None)
    parent = getattr(cause, "parent_node", None)
    if "not in struct" in str(cause) and full_key and isinstance(parent, DictConfig):
        section, _, leaf = str(full_key).rpartition(".")
        prefix, where = (f"{section}.", section) if section else ("", "the config")
        return (
            f"unknown key {full_key}{did_you_mean(leaf, list(parent.keys()), prefix)}; keys of "
            f"{where}: {sorted(str(key) for key in parent.keys())} (a new key is added with +{full_key}=...)"
        )
    if isinstance(cause, OmegaConfBaseException) and full_key:  # then 'full_key: ...' lines
        return f"{full_key}: {str(cause).splitlines()[0]}"
    lines = []
    for line in str(error).splitlines():
        if line.startswith("Config search path"):
            break
        if line.strip():
            lines.append(line.strip())
    return " ".join(lines)


def one_line_os_error(error: OSError) -> str:
    """``PATH: reason`` of an ``OSError`` (the path it names, else its message)."""
    reason = error.strerror or str(error)
    return f"{error.filename}: {reason}" if error.filename else reason


def _remove_new_directories() -> None:
    """Remove the directories noted by :class:`NewRunDirectory` that hold no file."""
    while _new_directories:
        directory = _new_directories.pop()
        if directory.is_dir() and not any(
            path.is_file() or path.is_symlink() for path in directory.rglob("*")
        ):
            shutil.rmtree(directory, ignore_errors=True)
