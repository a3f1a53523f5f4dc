"""The validated number types of the scenario schema: physical and numerical ranges (docs/model.md 3.1).

The ranges are wide enough for any market one would study and narrow enough that every
exponential, product and sum the solver and the finite-N market form stays finite in
double precision: rates per year up to 1e3 (a horizon of hours), liquidity levels within
1e3 of 0, money ratios (yields, discount rates, growth) within 100% a year.  A value outside
its range is refused by pydantic with the field named.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

__all__ = ["bounded", "Level", "Rate", "AnnualRate", "Volatility", "Year", "Span", "Capital"]


def bounded(lo: float, hi: float, *, lo_open: bool = False):
    """A float in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``): the ranges of docs/model.md 3.1."""
    lower = {"gt": lo} if lo_open else {"ge": lo}
    return Annotated[float, Field(le=hi, allow_inf_nan=False, **lower)]


Level = bounded(-1e3, 1e3)  # a liquidity level (dimensionless)
Rate = bounded(0.0, 1e3)  # a rate per year
AnnualRate = bounded(-1.0, 1.0)  # a yield, discount or growth rate per year (-100% .. +100%)
Volatility = bounded(0.0, 1e2)  # liquidity units per sqrt(year)
Year = bounded(-1e4, 1e4)  # a calendar time, years
Span = bounded(0.0, 1e3, lo_open=True)  # a duration, years
Capital = bounded(0.0, 1e3, lo_open=True)  # buyer capital, units of market NAV
