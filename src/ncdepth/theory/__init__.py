"""Theory beside the trained networks, depending on :mod:`ncdepth.metrics` only.

* :mod:`ncdepth.theory.kernels` — NNGP and NTK of two-layer nets, kernel NC1;
* :mod:`ncdepth.theory.adaptive` — the adaptive (equation-of-state) kernel of a two-layer erf net;
* :mod:`ncdepth.theory.gaussian_data` — Kothapalli & Tirer's Gaussian classification sets.
"""
