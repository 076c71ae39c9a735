"""Theory beside the trained networks, depending on :mod:`ncdepth.metrics` only.

* :mod:`ncdepth.theory.kernels` — NNGP and NTK of two-layer nets, kernel NC1;
* :mod:`ncdepth.theory.adaptive` — the adaptive (equation-of-state) kernel of a two-layer erf net;
* :mod:`ncdepth.theory.gaussian_data` — Kothapalli & Tirer's Gaussian classification sets;
* :mod:`ncdepth.theory.ufm` — the deep-linear unconstrained-features model (Dang et al. 2023):
  ``closed_form`` optimum (orthogonal frame, simplex ETF, general orthogonal frame, minority
  collapse) and ``optimize`` (direct optimisation);
* :mod:`ncdepth.theory.geometry` — distances of ``W W^T``, ``Hbar^T Hbar``, ``W Hbar`` to those
  frames, the ``W``-``Hbar`` alignment and the minority-collapse ratios.
* :mod:`ncdepth.theory.bound` — Galanti, Galanti & Ben-Shaul's comparative generalization bound
  from effective depths, estimated over seeds.
"""
