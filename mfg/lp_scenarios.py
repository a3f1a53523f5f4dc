"""Alias of :mod:`mfg.lp_exit.scenarios`, the module path of the first release (user code keeps working)."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("mfg.lp_exit.scenarios")
