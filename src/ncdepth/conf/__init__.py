"""The Hydra configs of ncdepth's command-line tools, shipped inside the package.

Hydra finds them through the package (``pkg://ncdepth.conf``), so an installed ``ncdepth-train``
works from any directory; ``hydra.searchpath=[file://DIR]`` adds a user's own config groups.
"""
