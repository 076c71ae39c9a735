"""ncdepth's submitit launchers, here because Hydra instantiates launchers only from the
``hydra_plugins`` package (the code is :mod:`ncdepth.cli.sweep_launcher`)."""
