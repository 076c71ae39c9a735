"""Command-line entry points: ``ncdepth-train`` (:mod:`ncdepth.cli.train`)."""
