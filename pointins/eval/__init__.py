"""Evaluation: metrics (:mod:`pointins.eval.metrics`), frozen-feature probes (:mod:`pointins.eval.probe`),
instance / panoptic inference (:mod:`pointins.eval.instance`) and ``python -m pointins.evaluate``."""

from pointins.eval import metrics
from pointins.eval.metrics import *  # noqa: F403 - the metrics are the package's public names

__all__ = list(metrics.__all__)
