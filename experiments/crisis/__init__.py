"""Crisis experiments on the LP-exit MFG (docs/crisis.md, docs/crisis_calibration.md): each module is one experiment.

Every experiment module exposes ``run(out: Path, *, quick: bool = False) -> ExperimentReport``
and registers itself in :data:`experiments.crisis.common.EXPERIMENTS` by name, so that
``gelav crisis NAME`` and ``gelav crisis all`` find it.
"""
