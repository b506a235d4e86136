"""Evaluation: scoring a generator with the chosen metrics.

A metric plugin receives an :class:`EvaluationContext` (``context``); FID, KID and IS and
third-party feature metrics share :mod:`ganbench.evaluation.features`.
"""

from ganbench.evaluation.context import Evaluation, EvaluationContext, run_metrics

__all__ = ["Evaluation", "EvaluationContext", "run_metrics"]
