"""``gelav dashboard``: the LP-exit MFG beside a finite-N market of LPs, in the browser (docs/dashboard.md).

One job per module:

* :mod:`.compute` — what the dashboard computes, without any UI: the scenario (shipped or
  uploaded TOML, one-line errors), the user's shock on it, the cached equilibria and
  finite-N markets (LRU caches keyed by content), summaries and the downloadable paths;
* :mod:`.figures` — the panels as PNG images (matplotlib, Agg, no pyplot: safe off the UI thread);
* :mod:`.app` — the Solara page (controls, progress, figures, downloads);
* :mod:`.server` — the port check and the Solara server behind ``gelav dashboard``.

Only :mod:`.app` and :mod:`.server` import Solara (inside :func:`.server.serve`), so that
``gelav --help`` and the computing code need none.
"""
