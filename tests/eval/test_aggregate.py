from __future__ import annotations

import math

import pytest

from tdm_r1.eval.aggregate import geneval_stats, mean_ci, task_order

T975 = {1: 12.706204736174698, 3: 3.182446305284263}  # Student t quantiles (0.975)


def test_mean_ci_is_t_based() -> None:
    s = mean_ci([1.0, 2.0, 3.0, 4.0])
    std = math.sqrt(5 / 3)
    half = T975[3] * std / 2
    assert (s.mean, s.n) == (2.5, 4)
    assert s.std == pytest.approx(std, rel=1e-12)
    assert (s.ci_low, s.ci_high) == (
        pytest.approx(2.5 - half, rel=1e-12),
        pytest.approx(2.5 + half, rel=1e-12),
    )


def test_mean_ci_skips_nans_and_handles_tiny_samples() -> None:
    s = mean_ci([1.0, float("nan"), 3.0])
    assert (s.mean, s.n) == (2.0, 2)
    one = mean_ci([0.7, float("nan")])
    assert (one.mean, one.n) == (0.7, 1) and math.isnan(one.std) and math.isnan(one.ci_low)
    none = mean_ci([float("nan")])
    assert none.n == 0 and math.isnan(none.mean)
    const = mean_ci([1.0, 1.0, 1.0])
    assert (const.std, const.ci_low, const.ci_high) == (0.0, 1.0, 1.0)


def test_geneval_overall_is_the_unweighted_mean_of_task_accuracies() -> None:
    correct = [1, 1, 1, 1, 0, 1]
    tags = ["single_object"] * 4 + ["counting"] * 2
    stats = dict(geneval_stats(correct, tags))
    assert list(stats) == ["overall", "single_object", "counting"]
    assert stats["single_object"].mean == 1.0 and stats["counting"].mean == 0.5
    overall = stats["overall"]
    assert overall.mean == 0.75  # the image-level mean would be 5/6
    assert overall.n == 6
    assert overall.std == pytest.approx(math.sqrt(0.125))  # spread of (1.0, 0.5)
    # Var = (0/4 + 0.5/2) / 2^2; Welch-Satterthwaite dof = 0.25^2 / (0.25^2 / 1) = 1
    half = T975[1] * math.sqrt(0.25 / 4)
    assert overall.ci_low == pytest.approx(0.75 - half) and overall.ci_high == pytest.approx(0.75 + half)


def test_geneval_stats_skip_unscored_images_and_order_tasks() -> None:
    stats = dict(geneval_stats([1, float("nan"), 0, 1], ["position", "position", "colors", "colors"]))
    assert list(stats) == ["overall", "colors", "position"]
    assert stats["position"].n == 1 and stats["overall"].n == 3
    assert stats["overall"].mean == pytest.approx((0.5 + 1.0) / 2)
    assert task_order(["zzz", "color_attr", "single_object"]) == ["single_object", "color_attr", "zzz"]
