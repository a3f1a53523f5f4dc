"""Unanticipated ("MIT") shock events of the LP-exit game (docs/model.md 2.7).

A scenario is a list of :class:`ShockEvent`.  Before an event LPs expect none; at its
time ``τ`` the distribution reached so far is kept, the event is applied, and a new
equilibrium with perfect foresight is solved from ``τ`` on (:mod:`mfg.lp_exit.scenarios`).

An event does, at ``τ``:

* ``liquidity_shift`` δ: every active LP of the chosen ``populations`` (empty: all)
  has ``L -> L + δ`` (liquidity units; negative = a liquidity squeeze);
* ``capital_cut`` ψ ∈ [0, 1): buyer capital ``K -> (1 - ψ) K`` (secondary buyers' dry
  powder destroyed);

and on the period ``[τ, τ + duration)`` (steps ``n`` with ``t_n`` in it):

* ``Kbar_factor``: target buyer capital ``K̄ -> K̄ · factor`` (fund-raising dries up);
* ``pbar_factor``: calm price ``P̄ -> P̄ · factor`` (a fundamental repricing; it also moves
  the reference of the mark-to-market term ``α log(P/P̄)``);
* ``sigma_factor``: liquidity volatility ``σ_k -> σ_k · factor`` of the chosen
  populations.

The temporary changes are known to LPs from ``τ`` on (perfect foresight after the
shock); events later than the current one are not anticipated.  Factors of
overlapping periods multiply.

This module imports nothing from the rest of :mod:`mfg`, so :mod:`mfg.lp_exit.params` can
import it to hold ``events`` in a :class:`~mfg.lp_exit.params.Scenario`.
"""

from __future__ import annotations

import math
from typing import Annotated, Iterable, Sequence

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from .ranges import Level, Year, bounded

__all__ = ["ShockEvent", "ShockSchedule", "sort_events", "check_events"]

_CONFIG = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, validate_default=True)



def _names(v: tuple[str, ...]) -> tuple[str, ...]:
    for s in v:
        if not s.strip():
            raise ValueError("population names must not be blank")
    dup = sorted({s for s in v if v.count(s) > 1})
    if dup:
        raise ValueError(f"duplicate population name(s) {dup}")
    return v


class ShockEvent(BaseModel):
    """One unanticipated shock (docs/model.md 2.7); see the module docstring for its effect.

    ``time`` (years) must be a step of the solve's grid inside ``[start, end)``
    (checked by :func:`check_events` / the solver).  ``populations``: names of the
    populations hit by ``liquidity_shift`` and ``sigma_factor`` (empty: all).
    ``duration`` (years, >= 0) is the period of the three factors; a factor other than
    1 needs ``duration > 0``.  The default event does nothing.
    """

    model_config = _CONFIG

    time: Year
    name: str = ""
    description: str = ""
    populations: Annotated[tuple[str, ...], AfterValidator(_names)] = ()
    liquidity_shift: Level = 0.0
    capital_cut: Annotated[float, Field(ge=0.0, lt=1.0, allow_inf_nan=False)] = 0.0
    Kbar_factor: bounded(0.0, 1e3, lo_open=True) = 1.0
    pbar_factor: bounded(0.0, 1e3, lo_open=True) = 1.0
    sigma_factor: bounded(0.0, 1e3) = 1.0
    duration: bounded(0.0, 1e3) = 0.0

    @model_validator(mode="after")
    def _period(self):
        moved = [f for f in ("Kbar_factor", "pbar_factor", "sigma_factor") if getattr(self, f) != 1.0]
        if moved and self.duration == 0.0:
            raise ValueError(f"duration: {', '.join(moved)} != 1 needs a period duration > 0 (years)")
        return self

    @property
    def label(self) -> str:
        return self.name or f"shock@{self.time:g}"

    @property
    def is_null(self) -> bool:
        """True when the event changes nothing (it still restarts the equilibrium at ``time``)."""
        return (self.liquidity_shift == 0.0 and self.capital_cut == 0.0 and self.Kbar_factor == 1.0
                and self.pbar_factor == 1.0 and self.sigma_factor == 1.0)

    def hits(self, population: str) -> bool:
        """Does the event act on ``population`` (liquidity shift, volatility factor)?"""
        return not self.populations or population in self.populations

    def in_period(self, t: float, tol: float = 0.0) -> bool:
        """``t`` in ``[time, time + duration)`` (with a tolerance ``tol`` on both ends)."""
        return self.time - tol <= t < self.time + self.duration - tol


def sort_events(events: Iterable[ShockEvent]) -> tuple[ShockEvent, ...]:
    """Events in time order (stable: events at the same time keep their order, and are applied in it)."""
    evs = tuple(events)
    for i, e in enumerate(evs):
        if not isinstance(e, ShockEvent):
            raise TypeError(f"events[{i}] must be a ShockEvent, got {type(e).__name__}")
    return tuple(sorted(evs, key=lambda e: e.time))


def check_events(events: Sequence[ShockEvent], populations: Sequence[str], start: float, end: float,
                 dt: float | None = None) -> tuple[ShockEvent, ...]:
    """Validate events against a model: population names known, ``time`` in ``[start, end)`` and,
    with ``dt``, a step ``start + n dt`` to within ``1e-9 dt``.  Returns them sorted."""
    evs = sort_events(events)
    known = set(populations)
    for e in evs:
        unknown = [p for p in e.populations if p not in known]
        if unknown:
            raise ValueError(f"events[{e.label}].populations: unknown population(s) {unknown}; "
                             f"known: {list(populations)}")
        if not (start <= e.time < end):
            raise ValueError(f"events[{e.label}].time={e.time!r} is outside the window [{start}, {end})")
        if dt is not None:
            s = (e.time - start) / dt
            if abs(s - round(s)) > 1e-9:
                raise ValueError(f"events[{e.label}].time={e.time!r} is not a step start + n dt of the grid "
                                 f"(start={start}, dt={dt}: off by {abs(s - round(s)):.3g} steps)")
    return evs


class ShockSchedule(BaseModel):
    """A validated, time-ordered list of events (the ``[[events]]`` of a scenario TOML)."""

    model_config = _CONFIG

    events: Annotated[tuple[ShockEvent, ...], AfterValidator(sort_events)] = ()

    def __iter__(self):
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)

    def factors(self, t, populations: Sequence[str], known_at: float = math.inf, tol: float = 0.0):
        """``(Kbar, pbar, sigma)`` multiplicative factors at the times ``t``.

        Only events with ``time <= known_at`` count (later ones are not anticipated).
        Returns arrays of shapes ``(n_t,), (n_t,), (n_pop, n_t)``.
        """
        t = np.asarray(t, dtype=float)
        kb = np.ones(t.shape)
        pb = np.ones(t.shape)
        sg = np.ones((len(populations),) + t.shape)
        for e in self.events:
            if e.time > known_at + tol:
                continue
            inside = (t >= e.time - tol) & (t < e.time + e.duration - tol)
            kb = np.where(inside, kb * e.Kbar_factor, kb)
            pb = np.where(inside, pb * e.pbar_factor, pb)
            for k, name in enumerate(populations):
                if e.hits(name):
                    sg[k] = np.where(inside, sg[k] * e.sigma_factor, sg[k])
        return kb, pb, sg
