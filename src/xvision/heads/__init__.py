"""Classifiers on CNN codes (scikit-learn-style estimators)."""

from xvision.heads.mlp import MLPClassifier

__all__ = ["MLPClassifier"]
