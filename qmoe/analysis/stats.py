"""The paper's significance tests (Table 6, Sec. 5.5), each returned as one small, self-describing record.

Every result names its exact test, its n, the statistic, the raw and (where a family of
comparisons was tested) Bonferroni-corrected p, an effect size, and a warning when n is too small
for the test to mean much: five fold scores make a weak t-test and a very weak Levene test.

Variance claims need repeats (see `across_seeds`): one pair of 5-fold runs can show anything from
a large "variance reduction" to a large increase by chance alone.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pingouin as pg

from ..core.errors import ConfigError, DataError

MIN_N_TTEST = 5  # per group
MIN_N_LEVENE = 3  # per group
MIN_N_SPEARMAN = 5
ALTERNATIVES = ("two-sided", "greater", "less")


@dataclass(frozen=True)
class TestResult:
    __test__ = False  # not a pytest test class
    test: str  # the exact test, e.g. "paired t-test (two-sided)"
    comparison: str  # what was compared, e.g. "Q2-Base vs Q16-Base (ESC-50)"
    n: int  # observations (pairs for paired tests; the smaller group for two-group tests)
    statistic: float
    p: float
    p_corrected: float | None = None
    correction: str | None = None  # e.g. "Bonferroni x4"
    effect_size: float | None = None
    effect_name: str | None = None
    warning: str | None = None
    extra: dict = field(default_factory=dict)  # dof, group sizes, means, variance reduction...

    @property
    def p_reported(self) -> float:
        """The p to judge significance by: corrected if a correction was applied."""
        return self.p if self.p_corrected is None else self.p_corrected

    def significant(self, alpha: float = 0.05) -> bool:
        return bool(self.p_reported < alpha)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(d.pop("extra"))
        return d


def _values(x, name: str, min_n: int = 2) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    if a.size < min_n:
        raise DataError(f"{name} needs at least {min_n} values, got {a.size}")
    if not np.isfinite(a).all():
        raise DataError(f"{name} contains NaN or infinite values")
    return a


def _alternative(alternative: str) -> str:
    if alternative not in ALTERNATIVES:
        raise ConfigError(f"alternative must be one of {', '.join(ALTERNATIVES)}; got {alternative!r}")
    return alternative


def _col(row, *names):
    """pingouin renamed its columns between versions (p-val -> p_val)."""
    for n in names:
        if n in row:
            return float(row[n])
    raise KeyError(names)


def _small_n(n: int, minimum: int, test: str) -> str | None:
    if n < minimum:
        return f"n={n} is too small for a {test} to mean much (want at least {minimum})"
    return None


@contextmanager
def _quiet():
    """pingouin warns about small n in its power estimate, which we do not report; our own warning says it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*too small to estimate power.*")
        yield


def _no_spread(*groups) -> bool:
    return all(np.ptp(g) == 0 for g in groups)


# ---------------------------------------------------------------------------------------------
# Effect sizes and variance ratios


def cohens_d(a, b, paired: bool = False) -> float:
    """Cohen's d of a - b with the pooled SD (independent) or the average SD (paired, pingouin's d_av)."""
    a, b = _values(a, "a"), _values(b, "b")
    if paired and a.size != b.size:
        raise DataError(f"paired samples must have equal length, got {a.size} and {b.size}")
    return float(pg.compute_effsize(a, b, paired=paired, eftype="cohen"))


def variance_reduction(baseline, candidate) -> float:
    """1 - var(candidate) / var(baseline) (ddof=1): the paper's "variance reduction"."""
    vb, vc = np.var(_values(baseline, "baseline"), ddof=1), np.var(_values(candidate, "candidate"), ddof=1)
    return float(1 - vc / vb) if vb > 0 else float("nan")


def std_reduction(baseline, candidate) -> float:
    """1 - std(candidate) / std(baseline): the other variant the reference code also reported under the same name."""
    sb, sc = np.std(_values(baseline, "baseline"), ddof=1), np.std(_values(candidate, "candidate"), ddof=1)
    return float(1 - sc / sb) if sb > 0 else float("nan")


# ---------------------------------------------------------------------------------------------
# Tests


def paired_ttest(a, b, comparison: str = "a vs b", alternative: str = "two-sided") -> TestResult:
    """Paired t-test of fold scores a vs b (same folds, same order); effect: signed Cohen's d_av of a - b."""
    a, b = _values(a, "a"), _values(b, "b")
    if a.size != b.size:
        raise DataError(f"paired samples must have equal length (one score per fold), got {a.size} and {b.size}")
    alternative = _alternative(alternative)
    n, diff = a.size, a - b
    warning = _small_n(n, MIN_N_TTEST, "paired t-test")
    if np.ptp(diff) == 0:  # identical differences: t is undefined
        stat, p = float("nan"), float("nan")
        warning = "the paired differences are all equal, so the t statistic is undefined"
        d = float("nan")
        dof = n - 1
    else:
        with _quiet():
            row = pg.ttest(a, b, paired=True, alternative=alternative).iloc[0]
        stat, p, dof = _col(row, "T"), _col(row, "p_val", "p-val"), _col(row, "dof")
        d = cohens_d(a, b, paired=True)  # signed (pingouin's ttest table reports |d|)
    return TestResult(f"paired t-test ({alternative})", comparison, n, stat, p, effect_size=d,
                      effect_name="Cohen's d (average SD)", warning=warning,
                      extra={"dof": dof, "mean_a": float(a.mean()), "mean_b": float(b.mean()),
                             "mean_diff": float(diff.mean())})


def welch_ttest(a, b, comparison: str = "a vs b", alternative: str = "two-sided") -> TestResult:
    """Welch's t-test (unequal variances), e.g. routing confidence of samples sent to two experts."""
    a, b = _values(a, "a"), _values(b, "b")
    alternative = _alternative(alternative)
    n = int(min(a.size, b.size))
    warning = _small_n(n, MIN_N_TTEST, "Welch t-test")
    if _no_spread(a, b):
        stat, p, dof, d = float("nan"), float("nan"), float("nan"), float("nan")
        warning = "both groups are constant, so the t statistic is undefined"
    else:
        with _quiet():
            row = pg.ttest(a, b, paired=False, correction=True, alternative=alternative).iloc[0]
        stat, p, dof = _col(row, "T"), _col(row, "p_val", "p-val"), _col(row, "dof")
        d = cohens_d(a, b)
    mb = float(b.mean())
    return TestResult(f"Welch t-test ({alternative})", comparison, n, stat, p, effect_size=d,
                      effect_name="Cohen's d (pooled SD)", warning=warning,
                      extra={"dof": dof, "n_a": int(a.size), "n_b": int(b.size), "mean_a": float(a.mean()),
                             "mean_b": mb, "relative_difference": float(a.mean() / mb - 1) if mb else float("nan")})


def levene(baseline, candidate, comparison: str = "candidate vs baseline", center: str = "median") -> TestResult:
    """Levene's test for equal variances of two sets of (fold) scores; effect: variance reduction.

    center="median" (Brown-Forsythe) is scipy's default and what the reference code used;
    center="mean" is Levene's original test.
    """
    if center not in ("median", "mean", "trimmed"):
        raise ConfigError(f"center must be 'median', 'mean' or 'trimmed', got {center!r}")
    b, c = _values(baseline, "baseline"), _values(candidate, "candidate")
    n = int(min(b.size, c.size))
    warning = _small_n(n, MIN_N_LEVENE, "Levene test")
    if _no_spread(b, c):
        stat, p = float("nan"), float("nan")
        warning = "both groups are constant, so Levene's statistic is undefined"
    else:
        row = pg.homoscedasticity({"baseline": b, "candidate": c}, method="levene", center=center).iloc[0]
        stat, p = _col(row, "W"), _col(row, "pval", "p_val", "p-val")
    if warning is None and n < 10:
        warning = f"n={n} per group: Levene's test has little power, a non-significant p says little"
    return TestResult(f"Levene test (center={center})", comparison, n, stat, p,
                      effect_size=variance_reduction(b, c), effect_name="variance reduction 1 - var_c/var_b",
                      warning=warning,
                      extra={"n_baseline": int(b.size), "n_candidate": int(c.size),
                             "std_baseline": float(b.std(ddof=1)), "std_candidate": float(c.std(ddof=1)),
                             "std_reduction": std_reduction(b, c)})


def spearman(x, y, comparison: str = "x vs y") -> TestResult:
    """Spearman's rank correlation, e.g. rank stability of variants across datasets or protocols."""
    x, y = _values(x, "x"), _values(y, "y")
    if x.size != y.size:
        raise DataError(f"x and y must have equal length, got {x.size} and {y.size}")
    n = int(x.size)
    warning = _small_n(n, MIN_N_SPEARMAN, "Spearman correlation")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        rho, p = float("nan"), float("nan")
        warning = "one of the rankings is constant, so rho is undefined"
    else:
        with _quiet():
            row = pg.corr(x, y, method="spearman").iloc[0]
        rho, p = _col(row, "r"), _col(row, "p_val", "p-val")
    return TestResult("Spearman rank correlation", comparison, n, rho, p, effect_size=rho,
                      effect_name="Spearman's rho", warning=warning)


def bonferroni(results: list[TestResult]) -> list[TestResult]:
    """Bonferroni-correct a family of comparisons: p_corrected = min(1, p x m), m = family size.

    Results with an undefined p stay undefined but still count in m (they were tested).
    """
    m = len(results)
    if m == 0:
        return []
    out = []
    for r in results:
        pc = float("nan") if np.isnan(r.p) else float(min(1.0, r.p * m))
        out.append(replace(r, p_corrected=pc, correction=f"Bonferroni x{m}"))
    return out


def paired_ttests(pairs: dict[str, tuple], alternative: str = "two-sided") -> list[TestResult]:
    """A family of paired t-tests {comparison: (a, b)}, Bonferroni-corrected together (Table 6)."""
    return bonferroni([paired_ttest(a, b, name, alternative) for name, (a, b) in pairs.items()])


# ---------------------------------------------------------------------------------------------
# Variance claims across seeds


@dataclass(frozen=True)
class AcrossSeeds:
    """Fold-score spread of a baseline and a candidate, over repeated runs (seeds)."""

    comparison: str
    std_baseline: np.ndarray  # per seed: std over folds (ddof=1)
    std_candidate: np.ndarray
    variance_reduction: float  # 1 - mean fold variance (candidate) / mean fold variance (baseline)
    std_reduction: float  # 1 - mean fold std (candidate) / mean fold std (baseline)
    test: TestResult  # Welch t-test on the per-seed fold stds
    per_seed_variance_reduction: np.ndarray  # 1 - var_c/var_b for seed pairs i (shows the spread of one-run claims)

    def to_dict(self) -> dict:
        return {"comparison": self.comparison, "seeds_baseline": int(self.std_baseline.size),
                "seeds_candidate": int(self.std_candidate.size), "std_baseline": self.std_baseline.tolist(),
                "std_candidate": self.std_candidate.tolist(), "variance_reduction": self.variance_reduction,
                "std_reduction": self.std_reduction,
                "per_seed_variance_reduction": self.per_seed_variance_reduction.tolist(),
                **{f"test_{k}": v for k, v in self.test.to_dict().items()}}


def _fold_matrix(runs, name: str) -> np.ndarray:
    try:
        m = np.asarray([np.asarray(r, dtype=np.float64) for r in runs])
    except ValueError as e:
        raise DataError(f"{name}: every seed must have the same number of fold scores") from e
    if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] < 2:
        raise DataError(f"{name} must be a list of per-seed fold-score lists (seeds x folds, >= 2 folds), "
                        f"got shape {m.shape}")
    if not np.isfinite(m).all():
        raise DataError(f"{name} contains NaN or infinite values")
    return m


def across_seeds(baseline_runs, candidate_runs, comparison: str = "candidate vs baseline",
                 alternative: str = "two-sided") -> AcrossSeeds:
    """Does the candidate have a smaller fold-score spread than the baseline, across seeds?

    Each argument: per seed, the fold scores of one cross-validation run (seeds x folds). The
    unit of evidence is one run's fold std, so the test compares per-seed stds (Welch t-test),
    not one run's folds. alternative="less" asks "is the candidate's spread smaller?".
    """
    b, c = _fold_matrix(baseline_runs, "baseline_runs"), _fold_matrix(candidate_runs, "candidate_runs")
    sb, sc = b.std(axis=1, ddof=1), c.std(axis=1, ddof=1)
    vb, vc = b.var(axis=1, ddof=1), c.var(axis=1, ddof=1)
    k = min(len(vb), len(vc))
    with np.errstate(divide="ignore", invalid="ignore"):
        per_seed = 1 - vc[:k] / vb[:k]
    test = welch_ttest(sc, sb, f"fold-F1 std per seed: {comparison}", alternative)
    seeds = min(len(sb), len(sc))
    if seeds < MIN_N_TTEST:
        test = replace(test, warning=f"only {seeds} seed(s) per variant: too few to test a variance claim "
                                     f"(want at least {MIN_N_TTEST})")
    mvb, msb = vb.mean(), sb.mean()
    return AcrossSeeds(comparison, sb, sc,
                       float(1 - vc.mean() / mvb) if mvb > 0 else float("nan"),
                       float(1 - sc.mean() / msb) if msb > 0 else float("nan"), test, per_seed)
