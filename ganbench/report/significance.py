"""Which configs are really worse than the best one: Welch's t-test across seeds, Holm-corrected.

The choice, and why:

* **Welch's t-test**, one-sided (H1: this config's mean is worse than the best config's),
  on the per-seed final values. GAN benchmarks have 3 to 10 seeds per config; with so few
  values a bootstrap is too coarse to be trusted (3 values allow only 10 distinct
  resamples and its intervals are too narrow), while Welch's test stays valid for small
  samples of roughly normal values and does not assume the two configs spread equally.
* **Holm's step-down correction** over the comparisons within one dataset, so "worse" is
  claimed at family-wise level alpha however many configs are compared.
* **The best config** is the one with the best mean; it is compared with no one.
* **n = 1** on either side: there is no spread to compare against, so the verdict is
  "can't tell". Both sides without spread: equal means tie, different means are worse
  (p = 0).

A config marked ``tied`` is *not significantly worse* than the best: the seeds do not
show a difference at this alpha, which is not proof that there is none.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

from ganbench.report.directions import LOWER

ALPHA = 0.05
BEST, TIED, WORSE, UNKNOWN, NO_DATA = "best", "tied", "worse", "can't tell", "no data"
METHOD = ("Welch's t-test, one-sided (is this config worse than the best mean in its dataset?), "
          "on the per-seed final values, Holm-corrected within each dataset")


@dataclass(frozen=True)
class Verdict:
    """How one config compares with the best config of its dataset on the primary metric."""

    label: str
    """``best``, ``tied`` (not significantly worse), ``worse``, ``can't tell`` or ``no data``."""
    p_value: float | None = None
    """One-sided Welch p-value, before correction."""
    p_adjusted: float | None = None
    """Holm-adjusted p-value; ``worse`` when it is below alpha."""
    versus: str | None = None
    """config_id of the best config it was compared with."""

    def describe(self) -> str:
        """``tied (p=0.41)``, ``worse (p=0.003)``, ``best``, ``can't tell (n<2)``..."""
        if self.p_adjusted is None:
            return {UNKNOWN: "can't tell (n<2)"}.get(self.label, self.label)
        return f"{self.label} ({format_p(self.p_adjusted)})"


def format_p(p: float) -> str:
    """``p<0.001``, ``p=0.0498`` (never rounded across 0.05 or 0.01), ``p=0.41``."""
    return "p<0.001" if p < 0.001 else f"p={p:.3g}" if p < 0.1 else f"p={p:.2f}"


def welch_worse_p(candidate: Sequence[float], best: Sequence[float], better: str) -> float | None:
    """One-sided p-value of "``candidate`` is worse than ``best``"; None when either has n < 2."""
    import numpy as np
    from scipy import stats  # imported here: `ganbench --help` should not wait for scipy

    a, b = np.asarray(candidate, dtype=np.float64), np.asarray(best, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        return None
    if a.std(ddof=1) == 0 and b.std(ddof=1) == 0:
        difference = a.mean() - b.mean()
        worse = difference > 0 if better == LOWER else difference < 0
        return 0.0 if worse else 1.0
    alternative = "greater" if better == LOWER else "less"
    with warnings.catch_warnings():  # nearly identical values: scipy warns, the p-value is still usable
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_ind(a, b, equal_var=False, alternative=alternative)
    return float(result.pvalue) if math.isfinite(result.pvalue) else 1.0


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def compare_with_best(samples: dict[str, Sequence[float]], better: str, alpha: float = ALPHA) -> dict[str, Verdict]:
    """Verdicts for every config of one dataset, from ``config_id -> per-seed values``.

    ``better`` is ``lower`` or ``higher``; configs without values get ``no data``.
    """
    import numpy as np

    with_values = {key: list(values) for key, values in samples.items() if len(values)}
    verdicts = {key: Verdict(NO_DATA) for key in samples if key not in with_values}
    if not with_values:
        return verdicts
    sign = 1.0 if better == LOWER else -1.0
    best = min(with_values, key=lambda key: sign * float(np.mean(with_values[key])))
    verdicts[best] = Verdict(BEST)
    tested: dict[str, float] = {}
    for key, values in with_values.items():
        if key == best:
            continue
        p = welch_worse_p(values, with_values[best], better)
        if p is None:
            verdicts[key] = Verdict(UNKNOWN, versus=best)
        else:
            tested[key] = p
    for (key, p), adjusted in zip(tested.items(), holm(list(tested.values()))):
        verdicts[key] = Verdict(WORSE if adjusted < alpha else TIED, p, adjusted, best)
    return verdicts
