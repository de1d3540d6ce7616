import math

import pytest

from seqvae.annealing import constant, cyclical, kl_weight, linear, logistic
from seqvae.config import AnnealingConfig


def test_constant_is_beta_everywhere():
    assert [constant(step, beta=0.0) for step in (0, 10, 10**6)] == [0.0, 0.0, 0.0]
    assert constant(5, beta=4.0) == 4.0


@pytest.mark.parametrize(
    "step, expected", [(0, 0.1), (50, 0.1 + 0.9 * 0.5), (100, 1.0), (1000, 1.0)]
)
def test_linear_warmup(step, expected):
    assert linear(step, warmup_steps=100, beta=1.0, start=0.1) == pytest.approx(expected)


def test_linear_without_warmup_is_beta():
    assert linear(0, warmup_steps=0, beta=0.7) == 0.7


def test_logistic_is_half_at_midpoint_and_saturates():
    assert logistic(2500, rate=0.0025, midpoint=2500) == pytest.approx(0.5)
    assert logistic(2500 + 400, rate=0.0025, midpoint=2500) == pytest.approx(1 / (1 + math.exp(-1.0)))
    assert logistic(0, rate=0.0025, midpoint=2500) == pytest.approx(1 / (1 + math.exp(6.25)))
    assert logistic(10**6, rate=0.0025, midpoint=2500, beta=2.0) == pytest.approx(2.0)
    assert logistic(-(10**6), rate=1.0, midpoint=0) == 0.0  # no overflow


@pytest.mark.parametrize(
    "step, expected",
    [(0, 0.0), (25, 0.5), (50, 1.0), (75, 1.0), (99, 1.0), (100, 0.0), (110, 0.2), (150, 1.0)],
)
def test_cyclical_restarts_each_cycle(step, expected):
    assert cyclical(step, cycle_steps=100, ratio=0.5) == pytest.approx(expected)


def test_kl_weight_dispatches_on_the_config():
    assert kl_weight(50, AnnealingConfig(schedule="linear", warmup_steps=100)) == pytest.approx(0.5)
    assert kl_weight(7, AnnealingConfig(schedule="constant", beta=0.0)) == 0.0
    assert kl_weight(125, AnnealingConfig(schedule="cyclical", cycle_steps=100, cycle_ratio=0.5)) == pytest.approx(0.5)
    assert kl_weight(10, AnnealingConfig(schedule="logistic", logistic_rate=1.0, logistic_midpoint=10)) == 0.5
