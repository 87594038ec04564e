"""The bootstrap's sampler: exact multinomial draws (numpy's below n=1000, Poisson plus a
top-up above) and the Poisson inverse-CDF table behind them."""

from __future__ import annotations

import numpy as np
import pytest

from arena import _solver


@pytest.mark.parametrize("scale", [1, 100])  # numpy's multinomial below n=1000, Poisson + top-up above
def test_multinomial_sampler_is_exact_in_total_and_moments(scale: int) -> None:
    counts = np.array([50, 0, 30, 15, 5]) * scale
    n = int(counts.sum())
    draws = _solver.draw_multinomial(np.random.default_rng(1), counts, 20000)
    assert np.all(draws.sum(axis=1) == n)
    assert np.all(draws[:, 1] == 0)
    p = counts / n
    se_mean = np.sqrt(n * p * (1 - p) / 20000)
    assert np.all(np.abs(draws.mean(axis=0) - n * p) <= 4 * se_mean + 1e-12)
    assert np.allclose(draws.var(axis=0), n * p * (1 - p), rtol=0.05, atol=1e-12)
    # the covariance is the multinomial's −n p_i p_j, not the independent Poissons' 0
    assert np.cov(draws[:, 0], draws[:, 2])[0, 1] == pytest.approx(-n * p[0] * p[2], rel=0.1)
    tiny = _solver.draw_multinomial(np.random.default_rng(2), np.array([1, 2, 1]), 500)
    assert np.all(tiny.sum(axis=1) == 4)


def test_poisson_table_draws_follow_the_poisson_law() -> None:
    """The inverse-CDF lookup behind the sampler: each cell's draws have its Poisson pmf
    (a χ² goodness-of-fit test per mean), including means whose bins are all ambiguous."""
    from scipy.stats import chisquare, poisson

    means = np.array([0.0, 0.3, 3.7, 67.0, 67.0, 5000.0, 250_000.0])
    table = _solver._PoissonTable(means)
    draws = table.draw(np.random.default_rng(5), 40_000)
    assert draws.shape == (7, 40_000) and draws.dtype == np.int32
    assert np.all(draws[0] == 0)
    for mean, row in zip(means[1:], draws[1:]):
        lo, hi = int(poisson.ppf(1e-4, mean)), int(poisson.ppf(1 - 1e-4, mean))
        edges = np.unique(np.linspace(lo, hi + 1, min(40, hi + 2 - lo)).astype(int))
        observed = np.histogram(row, bins=np.concatenate([[-1], edges, [np.inf]]))[0]
        expected = np.diff(np.concatenate([[0.0], poisson.cdf(edges - 1, mean), [1.0]])) * len(row)
        keep = expected > 0
        assert chisquare(observed[keep], expected[keep] * observed[keep].sum() / expected[keep].sum()).pvalue > 1e-4, mean
        assert abs(row.mean() - mean) < 5 * np.sqrt(mean / len(row)) + 1e-9


def test_poisson_table_is_the_exact_inverse_cdf_of_its_uniforms() -> None:
    """Every draw is #{x : F(x) ≤ u} for the uniform u behind it (rebuilt from the same
    random stream: 32 bits per draw, then a refining uniform per ambiguous draw)."""
    from scipy.stats import poisson

    means = np.array([0.3, 3.7, 67.0, 5000.0, 250_000.0])
    table = _solver._PoissonTable(means)
    draws = table.draw(np.random.default_rng(9), 300)
    replay = np.random.default_rng(9)
    bits = replay.integers(0, 1 << 32, size=draws.shape, dtype=np.uint32).astype(np.float64)
    bins = (bits // 2 ** (32 - table.bin_bits)).astype(int)
    ambiguous = table.low[np.arange(len(means))[:, None], bins] < 0
    u = (bits + 0.5) / 2**32
    u[ambiguous] = (bits[ambiguous] + replay.random(int(ambiguous.sum()))) / 2**32
    assert ambiguous[-1].mean() > 0.3  # the widest mean exercises the binary search
    for c, mean in enumerate(means):
        support = np.arange(0, int(mean + 20 * np.sqrt(mean) + 40))
        expected = np.searchsorted(poisson.cdf(support, mean), u[c], side="right")
        assert np.array_equal(draws[c], expected), mean
