"""Experiments built on the package: :mod:`pointins.experiments.ablation` (what each part of PointINS adds)."""
