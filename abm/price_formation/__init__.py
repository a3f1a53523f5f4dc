"""The finite-N price-formation market (docs/model.md 1.5): N traders in the same discrete
scheme as the MFG solver (:mod:`.market`), with initial holdings drawn from the
discretised initial law (:mod:`.sampling`)."""

from .market import simulate_price_formation_market

__all__ = ["simulate_price_formation_market"]
