"""Each statistic against scipy / a hand computation, on real fold scores from ESC-50 embeddings."""
import numpy as np
import pytest
from scipy import stats as sps
from sklearn.linear_model import RidgeClassifier
from sklearn.metrics import f1_score
from sklearn.neighbors import NearestCentroid

from qmoe.analysis import stats
from qmoe.core.errors import ConfigError, DataError

pytestmark = pytest.mark.filterwarnings("ignore:self.within_class_std_dev_")  # constant embedding dims


def _fold_f1(esc50, make, train_share=1.0, seed=0):
    """Macro-F1 of `make()` on each predefined ESC-50 fold (major task), trained on a share of the train rows."""
    y = esc50.task("major").labels
    rng = np.random.default_rng(seed)
    scores = []
    for fold in esc50.fold_ids("predefined"):
        train, test = esc50.split("major", "predefined", fold)
        train = rng.permutation(train)[: int(len(train) * train_share)]
        mean, std = esc50.X[train].mean(0), esc50.X[train].std(0) + 1e-6
        clf = make().fit((esc50.X[train] - mean) / std, y[train])
        scores.append(f1_score(y[test], clf.predict((esc50.X[test] - mean) / std), average="macro"))
    return np.array(scores)


@pytest.fixture(scope="module")
def folds(esc50):
    """Real fold scores of two simple classifiers (5 predefined folds each)."""
    return _fold_f1(esc50, NearestCentroid), _fold_f1(esc50, lambda: RidgeClassifier(alpha=10.0))


@pytest.fixture(scope="module")
def seeded_runs(esc50):
    """Per-seed fold scores: nearest centroid trained on a random 10% vs 60% of the training folds."""
    small = [_fold_f1(esc50, NearestCentroid, 0.1, seed) for seed in range(5)]
    large = [_fold_f1(esc50, NearestCentroid, 0.6, seed) for seed in range(5)]
    return small, large


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_paired_ttest_matches_scipy(folds, alternative):
    a, b = folds
    r = stats.paired_ttest(a, b, "NC vs Ridge", alternative)
    ref = sps.ttest_rel(a, b, alternative=alternative)
    assert r.statistic == pytest.approx(ref.statistic) and r.p == pytest.approx(ref.pvalue)
    assert r.n == 5 and r.extra["dof"] == 4 and r.warning is None
    assert r.test == f"paired t-test ({alternative})" and r.comparison == "NC vs Ridge"
    d_av = (a.mean() - b.mean()) / np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    assert r.effect_size == pytest.approx(d_av)  # signed: negative when a < b


def test_cohens_d_sign_and_pooled_formula(folds):
    a, b = folds
    pooled = np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    assert stats.cohens_d(a, b) == pytest.approx((a.mean() - b.mean()) / pooled)
    assert stats.cohens_d(b, a) == pytest.approx(-stats.cohens_d(a, b))


def test_welch_ttest_matches_scipy_and_satterthwaite(esc50):
    # Routing-confidence-like data: max class probability proxies of two groups of different size and spread.
    rng = np.random.default_rng(0)
    a = esc50.X[:300, 0]
    b = esc50.X[300:1000, 1] * 2 + rng.normal(size=700)
    r = stats.welch_ttest(a, b, "group a vs b")
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert r.statistic == pytest.approx(ref.statistic) and r.p == pytest.approx(ref.pvalue)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    assert r.extra["dof"] == pytest.approx(dof)
    assert r.n == 300 and r.extra["n_b"] == 700
    assert r.extra["relative_difference"] == pytest.approx(a.mean() / b.mean() - 1)


@pytest.mark.parametrize("center", ["median", "mean"])
def test_levene_matches_scipy(seeded_runs, center):
    small, large = seeded_runs
    b, c = np.concatenate(small), np.concatenate(large)
    r = stats.levene(b, c, "60% vs 10% training data", center=center)
    ref = sps.levene(b, c, center=center)
    assert r.statistic == pytest.approx(ref.statistic) and r.p == pytest.approx(ref.pvalue)
    assert r.test == f"Levene test (center={center})" and r.n == 25
    assert r.effect_size == pytest.approx(1 - c.var(ddof=1) / b.var(ddof=1))
    assert r.extra["std_reduction"] == pytest.approx(1 - c.std(ddof=1) / b.std(ddof=1))


def test_levene_warns_on_five_folds_and_refuses_nothing(folds):
    a, b = folds
    r = stats.levene(a, b)
    assert r.n == 5 and "little power" in r.warning
    r2 = stats.levene(a[:2], b[:2])
    assert "too small" in r2.warning


def test_spearman_matches_scipy(folds, seeded_runs):
    x = np.concatenate(folds)
    y = np.concatenate([seeded_runs[0][0], seeded_runs[1][0]])
    r = stats.spearman(x, y, "ranks")
    ref = sps.spearmanr(x, y)
    assert r.statistic == pytest.approx(ref.statistic) and r.p == pytest.approx(ref.pvalue)
    assert r.effect_size == r.statistic and r.n == 10 and r.warning is None
    assert "too small" in stats.spearman(x[:4], y[:4]).warning


def test_bonferroni_multiplies_by_family_size_and_caps_at_one(folds, seeded_runs):
    a, b = folds
    family = stats.paired_ttests({"NC vs Ridge": (a, b), "Ridge vs NC": (b, a),
                                  "NC vs NC(10%)": (a, seeded_runs[0][0])})
    assert len(family) == 3
    for r in family:
        assert r.correction == "Bonferroni x3"
        assert r.p_corrected == pytest.approx(min(1.0, 3 * r.p)) and r.p_reported == r.p_corrected
    big = stats.bonferroni([stats.TestResult("t", "c", 5, 1.0, 0.6)] * 2)
    assert big[0].p_corrected == 1.0 and not big[0].significant()
    assert stats.bonferroni([]) == []


def test_small_n_warnings_and_degenerate_cases():
    r = stats.paired_ttest([0.80, 0.82, 0.79], [0.78, 0.79, 0.80])
    assert r.n == 3 and "too small" in r.warning and np.isfinite(r.p)
    assert stats.paired_ttest([1, 2, 3, 4, 5], [0, 1, 2, 3, 4]).warning.startswith("the paired differences are all equal")
    assert np.isnan(stats.welch_ttest([1, 1, 1], [2, 2, 2]).p)
    assert "too small" in stats.welch_ttest([1, 2, 3, 4], [2, 3, 4, 6, 7, 8]).warning


def test_inputs_are_validated():
    with pytest.raises(DataError, match="equal length"):
        stats.paired_ttest([1, 2, 3], [1, 2])
    with pytest.raises(DataError, match="NaN"):
        stats.welch_ttest([1, np.nan, 3], [1, 2, 3])
    with pytest.raises(DataError, match="at least 2"):
        stats.levene([1], [1, 2])
    with pytest.raises(ConfigError, match="alternative"):
        stats.paired_ttest([1, 2, 3], [2, 3, 5], alternative="bigger")
    with pytest.raises(ConfigError, match="center"):
        stats.levene([1, 2, 3], [2, 3, 5], center="mode")
    with pytest.raises(DataError, match="same number"):
        stats.across_seeds([[1, 2, 3], [1, 2]], [[1, 2, 3]])


def test_variance_and_std_reduction_by_hand():
    b, c = [0.80, 0.84, 0.76, 0.82], [0.80, 0.81, 0.79, 0.80]
    vb, vc = np.var(b, ddof=1), np.var(c, ddof=1)
    assert stats.variance_reduction(b, c) == pytest.approx(1 - vc / vb)
    s = stats.std_reduction(b, c)
    assert s == pytest.approx(1 - np.sqrt(vc / vb))
    assert stats.variance_reduction(b, c) == pytest.approx(1 - (1 - s) ** 2)  # the two names differ, same data
    assert np.isnan(stats.variance_reduction([1, 1, 1], c))


def test_across_seeds_tests_per_seed_fold_std(seeded_runs):
    small, large = seeded_runs
    res = stats.across_seeds(small, large, "NC 60% vs 10% of training data", alternative="less")
    sb, sc = np.std(small, axis=1, ddof=1), np.std(large, axis=1, ddof=1)
    np.testing.assert_allclose(res.std_baseline, sb)
    np.testing.assert_allclose(res.std_candidate, sc)
    ref = sps.ttest_ind(sc, sb, equal_var=False, alternative="less")
    assert res.test.p == pytest.approx(ref.pvalue) and res.test.n == 5 and res.test.warning is None
    vb, vc = np.var(small, axis=1, ddof=1), np.var(large, axis=1, ddof=1)
    assert res.variance_reduction == pytest.approx(1 - vc.mean() / vb.mean())
    np.testing.assert_allclose(res.per_seed_variance_reduction, 1 - vc / vb)
    d = res.to_dict()
    assert d["seeds_baseline"] == 5 and d["test_test"] == "Welch t-test (less)"


def test_across_seeds_warns_with_few_seeds(seeded_runs):
    small, large = seeded_runs
    res = stats.across_seeds(small[:3], large[:3])
    assert "only 3 seed(s)" in res.test.warning
