"""Theory beside the trained networks, depending on :mod:`ncdepth.metrics` (and, for the kernels job's
two-layer net, :class:`ncdepth.models.FCN2`).

* :mod:`ncdepth.theory.kernels` — NNGP and NTK of two-layer nets, kernel NC1;
* :mod:`ncdepth.theory.adaptive` — the adaptive (equation-of-state) kernel of a two-layer erf net;
* :mod:`ncdepth.theory.gaussian_data` — Kothapalli & Tirer's Gaussian classification sets;
* :mod:`ncdepth.theory.ufm` — the deep-linear unconstrained-features model (Dang et al. 2023):
  ``closed_form`` optimum (orthogonal frame, simplex ETF, general orthogonal frame, minority
  collapse) and ``optimize`` (direct optimisation);
* :mod:`ncdepth.theory.ufm_starts` — the starts that take direct optimisation past the UFM's
  spurious minima to its optimum: continuation in the decays, then minority collapses;
* :mod:`ncdepth.theory.geometry` — distances of ``W W^T``, ``Hbar^T Hbar``, ``W Hbar`` to those
  frames, the ``W``-``Hbar`` alignment and the minority-collapse ratios.
* :mod:`ncdepth.theory.bound` — Galanti, Galanti & Ben-Shaul's comparative generalization bound
  from effective depths, estimated over seeds;
* :mod:`ncdepth.theory.kernels_job` (settings: :mod:`ncdepth.theory.kernels_job_config`) — one
  ``ncdepth-kernels`` job: NC1 of the data, the limiting and adaptive kernels and a trained two-layer
  net, into ``kernels.csv``;
* :mod:`ncdepth.theory.ufm_job` (settings: :mod:`ncdepth.theory.ufm_job_config`) — one
  ``ncdepth-ufm`` job: the UFM optimised beside its closed form, into ``ufm.csv``.
"""
