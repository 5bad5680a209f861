"""Evaluation: metrics (:mod:`pointins.eval.metrics`), frozen-feature probes (:mod:`pointins.eval.probe`),
instance / panoptic inference (:mod:`pointins.eval.instance`) and ``python -m pointins.evaluate``."""

from pointins.eval.metrics import (
    AP_THRESHOLDS,
    class_agnostic_ap,
    confusion_matrix,
    instance_ap,
    iou_from_confusion,
    miou,
    panoptic_quality,
)

__all__ = [
    "AP_THRESHOLDS",
    "class_agnostic_ap",
    "confusion_matrix",
    "instance_ap",
    "iou_from_confusion",
    "miou",
    "panoptic_quality",
]
