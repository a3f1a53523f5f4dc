"""Alias of :mod:`abm.lp_market.mesa_model`, the module path of the first release (user code keeps working)."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("abm.lp_market.mesa_model")
