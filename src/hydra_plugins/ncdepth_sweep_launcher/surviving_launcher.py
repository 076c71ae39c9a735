"""The launchers of ``hydra/launcher=slurm`` and ``slurm_rehearsal`` (:mod:`ncdepth.cli.sweep_launcher`).

Hydra imports every module of ``hydra_plugins`` when an app starts; without
hydra-submitit-launcher (the ``slurm`` extra) this one defines nothing, silently.
"""

from __future__ import annotations

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher
except ImportError:  # the slurm extra is not installed: no submitit launchers
    pass
else:
    from ncdepth.cli.sweep_launcher import SurvivingLaunch

    class SurvivingSlurmLauncher(SurvivingLaunch, SlurmLauncher):
        """hydra-submitit-launcher's ``SlurmLauncher`` with :class:`SurvivingLaunch`'s ``launch``."""

    class SurvivingLocalLauncher(SurvivingLaunch, LocalLauncher):
        """hydra-submitit-launcher's ``LocalLauncher`` (``slurm_rehearsal``) with
        :class:`SurvivingLaunch`'s ``launch``."""
