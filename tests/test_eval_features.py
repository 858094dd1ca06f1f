"""Distribution metrics: known answers, invariances and bad input."""

import numpy as np
import pytest

from unclip.eval.features import (
    frechet_distance, gaussian_frechet, kernel_inception_distance, mean_pairwise_distance, precision_recall,
)


def test_frechet_distance_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(500, 8))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_matches_the_closed_form_for_two_gaussians():
    # N(m1, diag(s1^2)) vs N(m2, diag(s2^2)): |m1 - m2|^2 + sum (s1 - s2)^2
    d = 4
    m1, m2 = np.zeros(d), np.full(d, 0.5)
    s1, s2 = np.array([1.0, 2, 0.5, 1]), np.array([2.0, 1, 0.5, 3])
    exact = ((m1 - m2) ** 2).sum() + ((s1 - s2) ** 2).sum()
    assert gaussian_frechet(m1, np.diag(s1 ** 2), m2, np.diag(s2 ** 2)) == pytest.approx(exact, rel=1e-9)
    rng = np.random.default_rng(1)
    x, y = m1 + s1 * rng.normal(size=(200_000, d)), m2 + s2 * rng.normal(size=(200_000, d))
    assert frechet_distance(x, y) == pytest.approx(exact, rel=0.02)
    # a rotation of both sets changes nothing (a full, non-diagonal covariance)
    q = np.linalg.qr(rng.normal(size=(d, d)))[0]
    assert frechet_distance(x @ q, y @ q) == pytest.approx(frechet_distance(x, y), rel=1e-6)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(1000, 16)), rng.normal(size=(1000, 16))
    same, _ = kernel_inception_distance(x, y, subsets=20, subset_size=200)
    shifted, _ = kernel_inception_distance(x, y + 0.5, subsets=20, subset_size=200)
    assert abs(same) < 0.02 and shifted > 10 * abs(same) + 0.05


def test_metrics_ignore_sample_order():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(300, 6)), rng.normal(size=(300, 6)) + 0.3
    px, py = x[rng.permutation(300)], y[rng.permutation(300)]
    assert frechet_distance(px, py) == pytest.approx(frechet_distance(x, y), rel=1e-9)
    assert precision_recall(px, py) == precision_recall(x, y)
    kid_full = kernel_inception_distance(x, y, subsets=1, subset_size=300)[0]
    assert kernel_inception_distance(px, py, subsets=1, subset_size=300)[0] == pytest.approx(kid_full, rel=1e-9)


def test_precision_and_recall_see_mode_dropping():
    rng = np.random.default_rng(0)
    real = np.concatenate([rng.normal(size=(200, 2)), rng.normal(size=(200, 2)) + 10])  # two modes
    one_mode = rng.normal(size=(400, 2))  # a model that covers only the first
    precision, recall = precision_recall(real, one_mode, k=3)
    assert precision > 0.9 and 0.4 < recall < 0.6
    assert precision_recall(real, real, k=3) == (1.0, 1.0)


def test_diversity_and_bad_input():
    groups = np.zeros((2, 3, 4))
    groups[0, 1, 0], groups[1, 2, 1] = 3.0, 6.0  # group 0: distances 3,3,0 -> mean 2 ; group 1: 6,6,0 -> 4
    assert mean_pairwise_distance(groups) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="feature sizes differ"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"\(G, K >= 2, D\)"):
        mean_pairwise_distance(np.zeros((2, 1, 3)))
