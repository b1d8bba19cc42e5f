"""The metrics of evaluate-variants against scikit-learn, scipy and hand computations on fixed inputs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from genossm.tasks import variant_metrics as vm


def fixed_binary(n=60, seed=3, ties=True):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(float)
    y[:2] = [0, 1]
    score = rng.normal(size=n) + y
    if ties:
        score = np.round(score, 1)  # many tied scores, across classes too
    chrom = np.array(["1", "2", "X"])[rng.integers(0, 3, n)]
    return y, score, chrom


def test_auroc_and_auprc_by_hand():
    y = np.array([1, 0, 1, 0, 0])
    s = np.array([0.9, 0.8, 0.7, 0.7, 0.1])
    # ROC: pairs (pos, neg) ranked right: 0.9 beats all 3; 0.7 beats 0.1, ties 0.7 (1/2), loses to 0.8
    assert vm.auroc(y, s) == pytest.approx((3 + 1 + 0.5) / 6)
    # thresholds 0.9 (P=1, R=1/2), 0.8 (P=1/2, R=1/2), 0.7 (P=2/4, R=1), 0.1 (P=2/5, R=1)
    assert vm.average_precision(y, s) == pytest.approx(0.5 * 1 + 0.5 * 0.5)


@pytest.mark.parametrize("ties", [False, True])
def test_auroc_and_auprc_match_sklearn(ties):
    y, s, _ = fixed_binary(ties=ties)
    assert vm.auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert vm.average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_weights_count_variants_as_copies():
    """An integer weight k is the variant written out k times (sklearn on np.repeat), also for a row of weights."""
    y, s, _ = fixed_binary()
    rng = np.random.default_rng(0)
    w = rng.integers(0, 4, size=(5, len(y))).astype(float)
    auc, ap = vm.auroc(y, s, w), vm.average_precision(y, s, w)
    assert auc.shape == ap.shape == (5,)
    for b in range(5):
        k = w[b].astype(int)
        assert auc[b] == pytest.approx(roc_auc_score(np.repeat(y, k), np.repeat(s, k)), abs=1e-12)
        assert ap[b] == pytest.approx(average_precision_score(np.repeat(y, k), np.repeat(s, k)), abs=1e-12)
        assert vm.auroc(y, s, w[b]) == pytest.approx(auc[b])  # one row of weights: a float


def test_undefined_binary_metrics_are_nan():
    assert np.isnan(vm.auroc([0, 0, 0], [1, 2, 3]))
    assert np.isnan(vm.auroc([1, 1], [1, 2]))
    assert np.isnan(vm.average_precision([0, 0], [1, 2]))
    assert vm.average_precision([1, 1], [1, 2]) == 1.0  # no negative: precision is 1 everywhere


def test_auprc_by_chromosome_is_the_positive_weighted_mean_of_per_chromosome_auprc():
    y, s, chrom = fixed_binary(n=90)
    want_sum = want_w = 0.0
    for c in np.unique(chrom):  # by hand, with scikit-learn per chromosome
        at = chrom == c
        if y[at].sum() == 0:
            continue
        want_sum += y[at].sum() * average_precision_score(y[at], s[at])
        want_w += y[at].sum()
    assert vm.auprc_by_chrom(y, s, chrom) == pytest.approx(want_sum / want_w, abs=1e-12)
    assert vm.auprc_by_chrom(y, s, np.full(len(y), "1")) == pytest.approx(average_precision_score(y, s))


def test_auprc_by_chromosome_skips_a_chromosome_without_positive():
    y = np.array([1, 0, 0, 1, 0, 0, 0, 0])
    s = np.array([0.2, 0.9, 0.1, 0.8, 0.3, 0.5, 0.6, 0.7])
    chrom = np.array(["a", "a", "a", "b", "b", "c", "c", "c"])
    a = average_precision_score(y[:3], s[:3])  # 1/2: the positive ranks second
    b = average_precision_score(y[3:5], s[3:5])  # 1
    assert vm.auprc_by_chrom(y, s, chrom) == pytest.approx((a + b) / 2)
    # random: each chromosome's fraction of positives, weighted by its positives (c weighs nothing)
    assert vm.random_values("binary", y, chrom)["auprc_by_chrom"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert vm.random_values("binary", y, chrom)["auprc"] == pytest.approx(2 / 8)


def test_random_auprc_of_one_causal_per_nine_controls_is_a_tenth():
    y = np.tile([1] + [0] * 9, 12)
    chrom = np.repeat(["1", "2", "3"], 40)
    assert vm.random_values("binary", y, chrom) == {"auroc": 0.5, "auprc": pytest.approx(0.1),
                                                    "auprc_by_chrom": pytest.approx(0.1)}


@pytest.mark.parametrize("ties", [False, True])
def test_correlations_match_scipy(ties):
    rng = np.random.default_rng(1)
    label = rng.normal(size=50)
    score = label + rng.normal(size=50)
    if ties:
        label, score = np.round(label), np.round(score, 1)
    assert vm.spearman(label, score) == pytest.approx(stats.spearmanr(score, label).statistic, abs=1e-12)
    assert vm.pearson(label, score) == pytest.approx(stats.pearsonr(score, label).statistic, abs=1e-12)
    w = rng.integers(0, 3, size=(4, 50)).astype(float)
    rho, r = vm.spearman(label, score, w), vm.pearson(label, score, w)
    for b in range(4):
        k = w[b].astype(int)
        assert rho[b] == pytest.approx(stats.spearmanr(np.repeat(score, k), np.repeat(label, k)).statistic, abs=1e-12)
        assert r[b] == pytest.approx(stats.pearsonr(np.repeat(score, k), np.repeat(label, k)).statistic, abs=1e-12)


def test_constant_scores_have_no_correlation():
    assert np.isnan(vm.spearman([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]))
    assert np.isnan(vm.pearson([1.0, 2.0, 3.0], [0.1, 0.1, 0.1]))


def test_bootstrap_counts_resample_whole_match_groups():
    groups = np.array(["g1"] * 3 + ["g2"] * 4 + ["g3"] * 2 + ["g4"])
    counts = vm.bootstrap_counts(groups, 200, seed=5)
    assert counts.shape == (200, 10)
    for g in np.unique(groups):  # every member of a group is drawn as often as the group
        at = groups == g
        assert (counts[:, at] == counts[:, at][:, :1]).all()
    sizes = np.array([3, 4, 2, 1])
    first = [0, 3, 7, 9]
    assert (counts[:, first].sum(1) == 4).all()  # as many groups drawn as there are
    assert np.allclose(counts.sum(1), counts[:, first] @ sizes)
    assert (vm.bootstrap_counts(groups, 200, seed=5) == counts).all()  # the seed fixes the draws


def test_bootstrap_interval_with_match_groups_matches_a_reference_loop():
    """The interval is the 2.5th-97.5th percentile of the metric over resamples of whole match groups: the same
    draws written out as variants and scored by scikit-learn give the same numbers."""
    rng = np.random.default_rng(2)
    n_groups = 30
    groups = np.repeat(np.arange(n_groups), 5)
    y = np.tile([1, 0, 0, 0, 0], n_groups).astype(float)
    s = rng.normal(size=len(y)) + 0.8 * y
    chrom = np.where(groups < 12, "1", "2")
    preds = {"model": s, "baseline": rng.normal(size=len(y))}
    res = vm.evaluate_predictors("binary", y, preds, chrom, units=groups, n_boot=300, seed=7, model="model")
    counts = vm.bootstrap_counts(groups, 300, seed=7)
    ref = {name: {"auprc": [], "auroc": [], "auprc_by_chrom": []} for name in preds}
    for b in range(300):
        k = counts[b].astype(int)
        yy, cc = np.repeat(y, k), np.repeat(chrom, k)
        for name, score in preds.items():
            ss = np.repeat(score, k)
            ref[name]["auprc"].append(average_precision_score(yy, ss))
            ref[name]["auroc"].append(roc_auc_score(yy, ss))
            per = [(yy[cc == c].sum(), average_precision_score(yy[cc == c], ss[cc == c])) for c in np.unique(cc)]
            ref[name]["auprc_by_chrom"].append(sum(p * a for p, a in per) / sum(p for p, _ in per))
    for name in preds:
        for metric, values in ref[name].items():
            got = res["predictors"][name][metric]
            low, high = np.percentile(values, [2.5, 97.5])
            assert got["low"] == pytest.approx(low, abs=1e-9) and got["high"] == pytest.approx(high, abs=1e-9)
    assert res["predictors"]["model"]["auprc"]["value"] == pytest.approx(average_precision_score(y, s))
    diff = np.array(ref["model"]["auprc"]) - np.array(ref["baseline"]["auprc"])
    vs = res["versus"]["baseline"]["auprc"]
    assert vs["low"] == pytest.approx(np.percentile(diff, 2.5)) and vs["high"] == pytest.approx(np.percentile(diff, 97.5))
    assert vs["difference"] == pytest.approx(average_precision_score(y, s) - average_precision_score(y, preds["baseline"]))
    assert res["n_units"] == n_groups and res["n_positive"] == n_groups
    assert res["random"]["auprc"] == pytest.approx(0.2)


def test_regression_bootstrap_matches_scipy_on_the_same_draws():
    rng = np.random.default_rng(4)
    label = rng.normal(size=40)
    preds = {"m": label + rng.normal(size=40)}
    res = vm.evaluate_predictors("regression", label, preds, np.full(40, "1"), n_boot=100, seed=1)
    counts = vm.bootstrap_counts(np.arange(40), 100, seed=1)
    rho = [stats.spearmanr(np.repeat(preds["m"], k), np.repeat(label, k)).statistic for k in counts.astype(int)]
    assert res["predictors"]["m"]["spearman"]["low"] == pytest.approx(np.percentile(rho, 2.5), abs=1e-9)
    assert res["predictors"]["m"]["spearman"]["value"] == pytest.approx(stats.spearmanr(preds["m"], label).statistic)
    assert res["random"] == {"spearman": 0.0, "pearson": 0.0}


def test_verdict_says_whether_the_interval_clears_zero():
    y, s, chrom = fixed_binary(n=200, ties=False)
    rng = np.random.default_rng(0)
    preds = {"model": s, "noise": rng.normal(size=len(y)), "close": s + 0.01 * rng.normal(size=len(y))}
    res = vm.evaluate_predictors("binary", y, preds, chrom, n_boot=200, model="model")
    beats = vm.verdict(res, "model", ["noise"], "auprc")
    assert beats.startswith("model beats every baseline beyond the 95 % interval")
    not_all = vm.verdict(res, "model", ["noise", "close"], "auprc")
    assert "does NOT beat every baseline" in not_all and "not close" in not_all
    assert res["versus"]["close"]["auprc"]["low"] <= 0 <= res["versus"]["close"]["auprc"]["high"]


def test_bootstrap_blocks_do_not_change_the_resamples():
    groups = np.repeat(np.arange(37), 3)
    whole = np.concatenate(list(vm.bootstrap_blocks(groups, 50, seed=3, block_elements=10**9)))
    small = np.concatenate(list(vm.bootstrap_blocks(groups, 50, seed=3, block_elements=7 * len(groups))))
    assert whole.shape == small.shape == (50, 111) and (whole == small).all()
