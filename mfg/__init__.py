"""Continuum solvers on one semi-Lagrangian core (:mod:`mfg.semi_lagrangian`).

* :mod:`mfg.price_formation`: the price-formation MFG of Ashrafyan & Gomes (docs/model.md 1);
* :mod:`mfg.lp_exit`: the LP-exit MFG on the private-equity secondary market (docs/model.md 2).

``mfg.lp_params`` and ``mfg.lp_scenarios`` are the module paths of the first release,
kept as aliases of :mod:`mfg.lp_exit.params` and :mod:`mfg.lp_exit.scenarios`.
"""
