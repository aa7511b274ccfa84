"""Correlation statistics: known answers, direction, bootstrap intervals, agreement with pyiqa."""

from __future__ import annotations

import math

import numpy as np
import pytest

from iqa_plugin.eval.stats import correlations, fit_logistic, logistic4


def test_identity_gives_one_everywhere():
    x = np.linspace(0, 1, 40)
    c = correlations(x, x, bootstrap=0)
    assert (c.srcc, c.krcc) == pytest.approx((1.0, 1.0))
    assert c.plcc == pytest.approx(1.0) and c.plcc_fitted == pytest.approx(1.0, abs=1e-6)
    assert c.n == 40 and c.ci == {}


def test_reversed_gives_minus_one_and_lower_better_turns_it_around():
    x = np.linspace(0, 1, 40)
    c = correlations(-x, x, bootstrap=0)
    assert (c.srcc, c.krcc, c.plcc) == pytest.approx((-1.0, -1.0, -1.0))
    flipped = correlations(-x, x, bootstrap=0, lower_better=True)
    assert (flipped.srcc, flipped.krcc, flipped.plcc) == pytest.approx((1.0, 1.0, 1.0))
    assert flipped.lower_better is True


def test_independent_scores_are_about_zero():
    rng = np.random.default_rng(3)
    c = correlations(rng.normal(size=3000), rng.normal(size=3000), bootstrap=200)
    assert abs(c.srcc) < 0.06 and abs(c.krcc) < 0.04 and abs(c.plcc) < 0.06
    low, high = c.ci["srcc"]
    assert low < 0 < high  # the interval covers no correlation


def test_monotone_nonlinear_map_srcc_one_raw_plcc_below_fitted_plcc_one():
    pred = np.linspace(-4, 4, 80)
    mos = logistic4(pred, 90.0, 10.0, 0.5, 0.7)  # people saturate at both ends
    c = correlations(pred, mos, bootstrap=0)
    assert c.srcc == pytest.approx(1.0) and c.krcc == pytest.approx(1.0)
    assert c.plcc < 0.97
    assert c.plcc_fitted == pytest.approx(1.0, abs=1e-6) and c.rmse_fitted == pytest.approx(0.0, abs=1e-3)


def test_agrees_with_pyiqa_correlation_helpers():
    from pyiqa.metrics.correlation_coefficient import calculate_krcc, calculate_plcc, calculate_srcc

    rng = np.random.default_rng(0)
    mos = rng.uniform(1, 5, 300)
    pred = np.tanh(mos - 3) + rng.normal(scale=0.3, size=300)
    c = correlations(pred, mos, bootstrap=0)
    assert c.srcc == pytest.approx(calculate_srcc(pred, mos), abs=1e-12)
    assert c.krcc == pytest.approx(calculate_krcc(pred, mos), abs=1e-12)
    assert c.plcc == pytest.approx(calculate_plcc(pred, mos), abs=1e-12)
    assert c.plcc_fitted == pytest.approx(calculate_plcc(pred, mos, "logistic_4params"), abs=1e-4)


def test_bootstrap_intervals_cover_the_estimate_and_repeat_with_the_seed():
    rng = np.random.default_rng(1)
    mos = rng.normal(size=200)
    pred = mos + rng.normal(scale=0.8, size=200)
    a = correlations(pred, mos, bootstrap=300, seed=5)
    b = correlations(pred, mos, bootstrap=300, seed=5)
    assert a.ci == b.ci
    for name in ("srcc", "krcc", "plcc", "plcc_fitted"):
        low, high = a.ci[name]
        assert low < getattr(a, name) < high and high - low < 0.3
    wide = correlations(pred[:30], mos[:30], bootstrap=300, seed=5)
    assert wide.ci["srcc"][1] - wide.ci["srcc"][0] > a.ci["srcc"][1] - a.ci["srcc"][0]


def test_degenerate_inputs_give_nan_not_errors_and_bad_lengths_fail():
    c = correlations(np.ones(20), np.arange(20.0), bootstrap=50)
    assert math.isnan(c.srcc) and math.isnan(c.plcc_fitted)
    assert c.to_dict()["srcc"] is None
    assert fit_logistic(np.arange(3.0), np.arange(3.0)) is None  # fewer points than parameters + 1
    nan_dropped = correlations([1.0, 2.0, float("nan"), 4.0, 5.0], [1, 2, 3, 4, 5], bootstrap=0)
    assert nan_dropped.n == 4 and nan_dropped.srcc == pytest.approx(1.0)
    with pytest.raises(ValueError, match="differ in length"):
        correlations([1, 2, 3], [1, 2], bootstrap=0)
