"""Alias of :mod:`abm.price_formation.market`, the module path of the first release (user code keeps working)."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("abm.price_formation.market")
