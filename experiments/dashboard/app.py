"""The Solara page of ``gelav dashboard`` (docs/dashboard.md): controls on the left, results on the right.

State lives in :func:`Page`: the scenario chosen (a shipped name or an uploaded file), each scenario's
shock (switching back to a scenario gives back its shock), the finite-N market's size and seed, and the
LP type of the density heat map.  Every change starts one job in a worker thread
(``solara.use_thread``): :func:`experiments.dashboard.compute.run` (cached equilibrium, cached
finite-N markets) and then the figures; the job yields progress, which the page shows with what is
running, while the previous figures stay on the page.  A job superseded by a newer request stops at
its next stage; a new one waits for the running one (one computation at a time, see
:data:`~experiments.dashboard.compute.COMPUTE_LOCK`).  Errors show as one line.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, replace

import ipyvuetify as v
import solara
import traitlets
from solara.datatypes import ResultState

from . import compute as C
from . import figures as F

DEFAULT_SCENARIO = "shock_demo"
N_CHOICES = [100, 300, 1_000, 3_000, 10_000, 30_000, 100_000]
ALL_TYPES = "all LPs"
UPLOAD_PREFIX = "upload: "

#: ``(request, density LP type, panel) -> PNG bytes``: a change of the heat map's LP type redraws one panel.
PANELS = C.LRUCache(96)


class TomlFileInput(v.VuetifyTemplate):
    """A file chooser (a real, visible ``<input type="file">``) that sends the chosen file to Python:
    ``file`` becomes ``{"name", "data" (base64), "stamp"}`` (``stamp`` makes choosing the same file again a change)."""

    template = traitlets.Unicode("""
<template>
  <div class="gelav-upload" style="margin: 8px 0">
    <div style="font-size: 0.85em; color: #444">upload a scenario TOML file</div>
    <input type="file" accept=".toml,text/plain,application/toml" @change="pick" style="font-size: 0.85em" />
  </div>
</template>
<script>
module.exports = {
  methods: {
    pick(e) {
      const input = e.target;
      const f = input.files && input.files[0];
      if (!f) return;
      const reader = new FileReader();
      reader.onload = () => {
        const url = String(reader.result);
        this.file = {name: f.name, data: url.slice(url.indexOf(",") + 1), stamp: Date.now()};
        input.value = "";
      };
      reader.readAsDataURL(f);
    }
  }
}
</script>
""").tag(sync=True)
    file = traitlets.Dict(default_value={}).tag(sync=True)


@dataclass(frozen=True, eq=False)
class View:
    """What the page shows for one finished request."""

    outcome: C.Outcome
    pngs: dict
    rows: list
    density_type: str | None


def _draw(outcome: C.Outcome, density_type: str | None) -> dict:
    out = {}
    for key, _ in F.PANELS:
        ck = (outcome.request, density_type if key == "density" else None, key)
        out[key], _hit = PANELS.get_or_compute(ck, lambda key=key: F.panel(outcome, key, density_type))
    return out


def _job(request: C.Request, density_type: str | None):
    def job(cancel):
        for item in C.run(request, cancel):
            if isinstance(item, C.Outcome):
                yield C.Progress("drawing the figures", 0.85)
                if cancel.is_set():
                    return
                yield View(item, _draw(item, density_type), C.summary_rows(item), density_type)
                return
            yield item
    return job


def _status_line(view: View) -> str:
    o = view.outcome
    eq, sim, r = o.equilibrium, o.simulation, o.request
    its = " + ".join(str(i) for i in eq.iterations)
    conv = "converged" if eq.converged else "NOT converged"
    eq_t = "from the cache" if o.equilibrium_cached else f"{o.equilibrium_seconds:.2f} s"
    sim_t = "from the cache" if o.simulation_cached else f"{o.simulation_seconds:.2f} s"
    return (f"{r.name} · {r.shock.label()} · {len(o.scenario.events)} event(s) in all · "
            f"equilibrium: {len(eq.segments)} segment(s), {its} iterations, "
            f"{conv} ({eq_t}) · finite-N: {sim.n_reps} market(s) of N = {sim.n_agents:,} LPs, seed {r.seed} ({sim_t})")


def _summary_html(view: View) -> str:
    """The summary table as HTML (solara.Markdown would fetch KaTeX from a CDN)."""
    r = view.outcome.request
    head = ["", "MFG equilibrium", f"finite N = {r.n_agents:,} ({r.n_reps} market(s))"]
    cell = "padding:2px 10px;text-align:{};border-bottom:1px solid #ddd"

    def row(cells, tag):
        return "<tr>" + "".join(f"<{tag} style='{cell.format('left' if i == 0 else 'right')}'>{html.escape(c)}</{tag}>"
                                for i, c in enumerate(cells)) + "</tr>"

    return ("<table style='border-collapse:collapse;font-size:0.9em'>" + row(head, "th")
            + "".join(row(r_, "td") for r_ in view.rows) + "</table>")


@solara.component
def ScenarioCard(choice, set_choice, names, description, uploads, on_upload, upload_error):
    with solara.Card("Scenario"):
        solara.Select("Scenario", values=names + [UPLOAD_PREFIX + n for n in uploads], value=choice,
                      on_value=set_choice)
        if description:
            _small(description)

        def from_input(f):
            if f:
                try:
                    data = base64.b64decode(f.get("data") or "")
                except ValueError:
                    data = b""
                on_upload(str(f.get("name") or "upload.toml"), data)

        TomlFileInput.element(on_file=from_input)
        solara.FileDrop(label="… or drop a scenario TOML file here", lazy=False,
                        on_file=lambda f: on_upload(f["name"], f["data"] or b""))
        if upload_error:
            with solara.Div(classes=["gelav-upload-error"]):
                solara.Error(upload_error)


def _small(text: str) -> None:
    solara.Text(text, style={"font-size": "0.85em", "color": "#444"})


@solara.component
def ShockCard(scenario, shock, set_shock):
    m, dt = scenario.model, float(scenario.grid.dt)
    types = list(dict.fromkeys(p.lp_type for p in m.populations))
    choices = types + [p.name for p in m.populations if p.name not in types]  # LP types first: a ladder is long
    t_shock = C.snap_time(scenario, shock.time)
    with solara.Card("Shock"):
        _small(f"size: liquidity shift δ = {shock.liquidity_shift:+.2f} of the LPs hit (L → L + δ)")
        with solara.Div(classes=["gelav-shock-size"]):
            solara.SliderFloat("", value=shock.liquidity_shift, min=-1.5, max=0.5, step=0.05,
                               on_value=lambda v: set_shock(liquidity_shift=round(v, 4)))
        _small(f"buyer capital cut ψ = {100 * shock.capital_cut:.0f}% (K → (1 − ψ) K)")
        with solara.Div(classes=["gelav-shock-cut"]):
            solara.SliderFloat("", value=shock.capital_cut, min=0.0, max=0.9, step=0.05,
                               on_value=lambda v: set_shock(capital_cut=round(v, 4)))
        _small(f"time t = {t_shock:.3f} (a step of the grid, dt = {dt:.4g} yr)")
        with solara.Div(classes=["gelav-shock-time"]):
            solara.SliderFloat("", value=t_shock, min=m.start + dt, max=m.end - dt, step=dt,
                               on_value=lambda v: set_shock(time=C.snap_time(scenario, v)), thumb_label=False)
        with solara.Div(classes=["gelav-shock-populations"]):
            solara.SelectMultiple("breadth: LP types or populations hit (none: all)", values=list(shock.populations),
                                  all_values=choices, on_value=lambda v: set_shock(populations=tuple(v)))
        _small(f"breadth: share of their LPs hit = {100 * shock.share:.0f}%")
        with solara.Div(classes=["gelav-shock-share"]):
            solara.SliderFloat("", value=shock.share, min=0.05, max=1.0, step=0.05,
                               on_value=lambda v: set_shock(share=round(v, 4)))
        _small(f"the liquidity shift hits {100 * C.nav_share_hit(scenario, shock):.0f}% of the market's NAV")
        with solara.Div(classes=["gelav-keep-events"]):
            solara.Checkbox(label=f"keep the scenario's own events ({len(scenario.events)})",
                            value=shock.keep_events, on_value=lambda v: set_shock(keep_events=bool(v)))
        solara.Button("no shock of its own", text=True,
                      on_click=lambda: set_shock(liquidity_shift=0.0, capital_cut=0.0))


@solara.component
def MarketCard(n_agents, set_n_agents, n_reps, set_n_reps, seed, set_seed, types, density_type, set_density_type):
    with solara.Card("Finite-N market and view"):
        solara.Select("N: LPs per market", values=N_CHOICES, value=n_agents, on_value=set_n_agents)
        _small(f"markets (independent replications): {n_reps}")
        solara.SliderInt("", value=n_reps, min=1, max=16, on_value=set_n_reps)
        solara.InputInt("seed", value=seed, on_value=lambda v: set_seed(int(v) if v is not None else 1))
        solara.Select("density heat map of", values=[ALL_TYPES] + types, value=density_type or ALL_TYPES,
                      on_value=lambda v: set_density_type(None if v == ALL_TYPES else v))


@solara.component
def Results(result, request, view: View | None):
    state = result.state
    value = result.value
    done = isinstance(value, View) and value.outcome.request == request
    with solara.Div(classes=["gelav-progress"]):
        if state in (ResultState.STARTING, ResultState.WAITING, ResultState.RUNNING) and not done:
            if state == ResultState.WAITING:
                msg, frac = "waiting for the previous computation to finish", True
            elif isinstance(value, C.Progress):
                msg, frac = value.message, 100 * value.fraction
            else:
                msg, frac = "starting", True
            solara.ProgressLinear(frac)
            solara.Text(f"running: {msg} …", classes=["gelav-running"])
    if isinstance(value, C.Failure) and value.request == request:
        with solara.Div(classes=["gelav-error"]):
            solara.Error(value.message)
    elif state == ResultState.ERROR and result.error is not None:
        with solara.Div(classes=["gelav-error"]):
            solara.Error(C.one_line(result.error))
    if view is None:
        return
    for note in view.outcome.warnings:
        solara.Warning(note)
    with solara.Div(classes=["gelav-status"]):
        solara.Text(_status_line(view), style={"font-size": "0.9em"})
    with solara.Div(classes=["gelav-summary"]):
        solara.HTML(tag="div", unsafe_innerHTML=_summary_html(view))
    with solara.Row(classes=["gelav-downloads"]):
        o = view.outcome
        stem = f"{o.request.name.removeprefix(UPLOAD_PREFIX).removesuffix('.toml')}_paths"
        solara.FileDownload(lambda: C.paths_csv(o), filename=f"{stem}.csv", label="market paths (CSV)",
                            mime_type="text/csv")
        solara.FileDownload(lambda: C.paths_parquet(o), filename=f"{stem}.parquet", label="market paths (Parquet)")
    with solara.GridFixed(columns=2):
        for key, _title in F.PANELS:
            solara.Image(view.pngs[key], width="100%", classes=[f"gelav-panel-{key}"])


@solara.component
def Page():
    solara.Title("gelav dashboard")
    names = solara.use_memo(C.shipped_names, [])
    choice, set_choice = solara.use_state(DEFAULT_SCENARIO if DEFAULT_SCENARIO in names else (names or [""])[0])
    uploads, set_uploads = solara.use_state({})  # file name -> Scenario
    upload_error, set_upload_error = solara.use_state("")
    shocks, set_shocks = solara.use_state({})  # scenario label -> Shock
    n_agents, set_n_agents = solara.use_state(1_000)
    n_reps, set_n_reps = solara.use_state(4)
    seed, set_seed = solara.use_state(1)
    density_type, set_density_type = solara.use_state(None)
    last_view = solara.use_ref(None)

    def on_upload(filename: str, data: bytes):
        try:
            sc = C.scenario_from_upload(filename, data)
        except C.DashboardInputError as exc:
            set_upload_error(str(exc))
            return
        set_upload_error("")
        set_uploads(lambda old: {**old, filename: sc})
        # a file uploaded again under the same name starts from its own default shock
        set_shocks(lambda old: {k: s for k, s in old.items() if k != UPLOAD_PREFIX + filename})
        set_choice(UPLOAD_PREFIX + filename)

    load_error = ""
    scenario = description = None
    if choice.startswith(UPLOAD_PREFIX) and choice.removeprefix(UPLOAD_PREFIX) in uploads:
        scenario, description = uploads[choice.removeprefix(UPLOAD_PREFIX)], "uploaded file"
    else:
        try:
            scenario, description = C.shipped_scenario(choice)
        except C.DashboardInputError as exc:
            load_error = str(exc)
    shock = shocks.get(choice) or (C.Shock(time=C.default_shock_time(scenario)) if scenario is not None else None)

    def set_shock(**changes):
        set_shocks(lambda old: {**old, choice: replace(old.get(choice, shock), **changes)})

    request = solara.use_memo(
        lambda: None if scenario is None else C.Request.make(scenario, choice, shock, n_agents, n_reps, seed),
        [choice, id(scenario), shock, n_agents, n_reps, seed])
    types = [] if scenario is None else list(dict.fromkeys(p.lp_type for p in scenario.model.populations))
    dens = density_type if density_type in types else None

    def nothing(cancel):
        yield C.Failure(None, load_error)

    result = solara.use_thread(_job(request, dens) if request is not None else nothing,
                               dependencies=[request, dens, load_error], intrusive_cancel=False)
    if isinstance(result.value, View) and result.value.outcome.request == request:
        last_view.current = result.value
    view = last_view.current if scenario is not None else None

    with solara.Column(style={"padding": "12px"}):
        solara.Text("gelav dashboard: LP exits, the MFG equilibrium beside a finite-N market",
                    style={"font-size": "1.5em", "font-weight": "500", "margin-bottom": "8px"})
        with solara.Columns([1, 3]):
            with solara.Column():
                ScenarioCard(choice, set_choice, names, description, list(uploads), on_upload, upload_error)
                if scenario is not None:
                    ShockCard(scenario, shock, set_shock)
                MarketCard(n_agents, set_n_agents, n_reps, set_n_reps, seed, set_seed, types, dens,
                           set_density_type)
            with solara.Column():
                Results(result, request, view)
