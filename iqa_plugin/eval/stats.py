"""Agreement of a metric's scores with human opinion, computed the way IQA papers report it.

* SRCC (Spearman), KRCC (Kendall's tau-b) and PLCC (Pearson), all from :mod:`scipy.stats`;
* PLCC and RMSE after the standard 4-parameter logistic mapping of the VQEG (the same function and
  starting point as pyiqa's ``fit_curve``), fitted with :func:`scipy.optimize.curve_fit`;
* 95% intervals by a paired percentile bootstrap over images (:func:`scipy.stats.bootstrap`).

Direction: a lower-is-better metric (PIQE, NIQE, GMSD, a distortion level) is negated before anything is
computed, so that a positive coefficient always means "agrees with people" and a good metric scores near 1
whatever its convention. The raw scores are never changed in the outputs.

>>> import numpy as np
>>> pred = np.linspace(-3.0, 3.0, 50)
>>> mos = logistic4(pred, 5.0, 1.0, 0.0, 0.5)  # people see a sigmoid of the metric's scale
>>> c = correlations(pred, mos, bootstrap=0)
>>> round(c.srcc, 6), c.plcc < 0.99, round(c.plcc_fitted, 4)
(1.0, True, 1.0)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats
from scipy.optimize import OptimizeWarning, curve_fit

#: Names of the coefficients, in the order tables print them.
COEFFICIENTS = ("srcc", "krcc", "plcc", "plcc_fitted")

#: Bootstrap resamples by default: 1000 is what IQA papers use and keeps the interval ends stable to about
#: +-0.005 for n >= 100 (percentile method; BCa would need n extra logistic fits per coefficient).
DEFAULT_BOOTSTRAP = 1000


def logistic4(x: np.ndarray, beta1: float, beta2: float, beta3: float, beta4: float) -> np.ndarray:
    """The VQEG 4-parameter logistic: ``(beta1 - beta2) / (1 + exp(-(x - beta3) / beta4)) + beta2``."""
    return (beta1 - beta2) * _sigmoid(x, beta3, beta4) + beta2


def _sigmoid(x: np.ndarray, beta3: float, beta4: float) -> np.ndarray:
    beta4 = beta4 if beta4 != 0 else 1e-12
    return 1.0 / (1.0 + np.exp(np.clip(-(x - beta3) / beta4, -500.0, 500.0)))  # no overflow on outliers


def _logistic4_jacobian(x: np.ndarray, beta1: float, beta2: float, beta3: float, beta4: float) -> np.ndarray:
    # analytic: MINPACK's finite differences step by eps*|beta3| and stall when the start has beta3 == 0
    beta4 = beta4 if beta4 != 0 else 1e-12
    s = _sigmoid(x, beta3, beta4)
    slope = (beta1 - beta2) * s * (1.0 - s) / beta4
    return np.stack([s, 1.0 - s, -slope, -slope * (x - beta3) / beta4], axis=1)


def fit_logistic(pred: np.ndarray, mos: np.ndarray, maxfev: int = 20_000,
                 start: list[float] | np.ndarray | None = None) -> np.ndarray | None:
    """``pred`` mapped onto the MOS scale by the fitted :func:`logistic4`; ``None`` when the fit fails.

    The default starting point is pyiqa's (``[max(mos), min(mos), mean(pred), std(pred) / 4]``), so the
    fitted PLCC agrees with ``pyiqa.metrics.correlation_coefficient.calculate_plcc(..., 'logistic_4params')``;
    the bootstrap starts each resample from the full sample's betas (15x fewer iterations, same optimum).
    """
    betas = fit_logistic_betas(pred, mos, maxfev=maxfev, start=start)
    if betas is None:
        return None
    fitted = logistic4(np.asarray(pred, dtype=np.float64), *betas)
    return fitted if np.all(np.isfinite(fitted)) else None


def fit_logistic_betas(pred: np.ndarray, mos: np.ndarray, maxfev: int = 20_000,
                       start: list[float] | np.ndarray | None = None) -> np.ndarray | None:
    """The fitted ``(beta1, beta2, beta3, beta4)`` of :func:`logistic4`, or ``None`` (see :func:`fit_logistic`)."""
    pred = np.asarray(pred, dtype=np.float64)
    mos = np.asarray(mos, dtype=np.float64)
    spread = float(np.std(pred))
    if len(pred) < 5 or spread == 0.0 or float(np.std(mos)) == 0.0:
        return None  # four parameters need at least five points, and a slope needs a spread
    jacobian = None  # finite differences: 5x faster from a warm start (the bootstrap)
    if start is None:
        start = [float(np.max(mos)), float(np.min(mos)), float(np.mean(pred)), spread / 4.0]
        jacobian = _logistic4_jacobian
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            warnings.simplefilter("ignore", RuntimeWarning)  # overflow in the covariance, which is not used
            betas, _ = curve_fit(logistic4, pred, mos, p0=start, maxfev=maxfev, jac=jacobian)
    except (RuntimeError, ValueError):
        return None
    return betas if np.all(np.isfinite(betas)) else None


def _safe(value: Any) -> float:
    value = float(value)
    return value if math.isfinite(value) else float("nan")


def _constant(x: np.ndarray) -> bool:
    return len(x) == 0 or bool(np.all(x == x[0]))


def srcc(pred: np.ndarray, mos: np.ndarray) -> float:
    """Spearman's rank correlation (``nan`` when either side is constant)."""
    if _constant(pred) or _constant(mos):
        return float("nan")
    return _safe(stats.spearmanr(pred, mos).statistic)


def krcc(pred: np.ndarray, mos: np.ndarray) -> float:
    """Kendall's tau-b (``nan`` when either side is constant)."""
    if _constant(pred) or _constant(mos):
        return float("nan")
    return _safe(stats.kendalltau(pred, mos).statistic)


def plcc(pred: np.ndarray, mos: np.ndarray) -> float:
    """Pearson's linear correlation of the raw scores (``nan`` when either side is constant)."""
    if _constant(pred) or _constant(mos):
        return float("nan")
    return _safe(stats.pearsonr(pred, mos).statistic)


def plcc_fitted(pred: np.ndarray, mos: np.ndarray, start: list[float] | np.ndarray | None = None) -> float:
    """Pearson's correlation after the 4-parameter logistic mapping (``nan`` when the fit fails)."""
    fitted = fit_logistic(pred, mos, start=start)
    return float("nan") if fitted is None else plcc(fitted, np.asarray(mos, dtype=np.float64))


@dataclass(frozen=True)
class Correlations:
    """Agreement of one metric with the human scores of one set of images.

    Coefficients are direction-corrected (see the module docstring); ``ci`` maps each to its
    ``(low, high)`` bootstrap interval (absent when ``bootstrap=0`` or fewer than 3 images).
    """

    n: int
    srcc: float
    krcc: float
    plcc: float
    plcc_fitted: float
    rmse_fitted: float
    lower_better: bool = False
    confidence: float = 0.95
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``nan`` becomes ``None``."""
        data = asdict(self)
        data["ci"] = {k: [_none(lo), _none(hi)] for k, (lo, hi) in self.ci.items()}
        return {k: _none(v) if isinstance(v, float) else v for k, v in data.items()}


def _none(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def _oriented(pred: Any, mos: Any, lower_better: bool) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    mos = np.asarray(mos, dtype=np.float64).reshape(-1)
    if pred.shape != mos.shape:
        raise ValueError(f"scores and human scores differ in length ({pred.size} vs {mos.size}); "
                         "pass one score per rated image")
    keep = np.isfinite(pred) & np.isfinite(mos)
    pred, mos = pred[keep], mos[keep]
    return (-pred if lower_better else pred), mos


def bootstrap_intervals(pred: np.ndarray, mos: np.ndarray, *, resamples: int = DEFAULT_BOOTSTRAP,
                        confidence: float = 0.95, seed: int = 0,
                        names: tuple[str, ...] = COEFFICIENTS,
                        start: np.ndarray | None = None) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of each coefficient in ``names``, resampling images with replacement.

    Resamples where a coefficient is undefined (e.g. all ties) are left out of that coefficient's
    percentiles; an interval is ``(nan, nan)`` when fewer than half of the resamples define it.
    """
    pred = np.asarray(pred, dtype=np.float64)
    mos = np.asarray(mos, dtype=np.float64)
    if len(pred) < 3 or resamples <= 0:
        return {}

    functions = {"srcc": srcc, "krcc": krcc, "plcc": plcc,
                 "plcc_fitted": lambda x, y: plcc_fitted(x, y, start=start)}

    def statistic(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.array([functions[name](x, y) for name in names])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate resamples give nan, handled below
        result = stats.bootstrap((pred, mos), statistic, paired=True, vectorized=False, n_resamples=resamples,
                                 confidence_level=confidence, method="percentile",
                                 rng=np.random.default_rng(seed))
    samples = np.atleast_2d(result.bootstrap_distribution)
    alpha = (1.0 - confidence) / 2.0
    intervals = {}
    for index, name in enumerate(names):
        values = samples[index][np.isfinite(samples[index])]
        if len(values) < resamples / 2:
            intervals[name] = (float("nan"), float("nan"))
        else:
            intervals[name] = (float(np.quantile(values, alpha)), float(np.quantile(values, 1.0 - alpha)))
    return intervals


def correlations(pred: Any, mos: Any, *, lower_better: bool = False, bootstrap: int = DEFAULT_BOOTSTRAP,
                 confidence: float = 0.95, seed: int = 0, ci_for: tuple[str, ...] = COEFFICIENTS) -> Correlations:
    """SRCC, KRCC, PLCC (raw and logistic-fitted) and fitted RMSE of ``pred`` against ``mos``.

    Args:
        pred: the metric's scores, one per image (non-finite entries and their MOS are dropped).
        mos: the human scores (mean opinion scores, or any quality where higher is better).
        lower_better: the metric's convention; its scores are negated first so that agreement is positive.
        bootstrap: resamples for the intervals (0 skips them).
        confidence: interval coverage.
        seed: the bootstrap's seed (same seed, same intervals).
        ci_for: the coefficients that get intervals (the fitted PLCC costs one logistic fit per resample).

    Raises:
        ValueError: ``pred`` and ``mos`` differ in length.
    """
    x, y = _oriented(pred, mos, lower_better)
    betas = fit_logistic_betas(x, y)
    fitted = None if betas is None else logistic4(x, *betas)
    rmse = float("nan") if fitted is None else float(np.sqrt(np.mean((fitted - y) ** 2)))
    return Correlations(
        n=int(len(x)), srcc=srcc(x, y), krcc=krcc(x, y), plcc=plcc(x, y),
        plcc_fitted=float("nan") if fitted is None else plcc(fitted, y), rmse_fitted=rmse,
        lower_better=lower_better, confidence=confidence,
        ci=bootstrap_intervals(x, y, resamples=bootstrap, confidence=confidence, seed=seed, start=betas,
                               names=ci_for),
    )
