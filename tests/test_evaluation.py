import numpy as np
import pytest

import dcpt_law as dl
from conftest import synthetic_table


@pytest.fixture(scope="module")
def small():
    # 4 sizes x 4 token counts x 9 ratios: 36 ratio-pair folds, fitted in one batched search
    return synthetic_table(4, tokens=np.geomspace(1e6, 1e8, 4))


def test_folds_cover_the_paper_settings(small):
    rows = dl.table.fit_rows(small).reset_index(drop=True)
    assert [f for f, _ in dl.folds(rows, "model_size")] == ["N=100000", "N=400000", "N=1600000", "N=6400000"]
    (name, test), = dl.folds(rows, "tokens")
    assert test.sum() == len(rows) // 4  # last of 4 points per run
    assert set(rows.loc[test, "tokens"]) == {1e8}
    pairs = dl.folds(rows, "ratio")
    assert len(pairs) == 36
    assert all(set(rows.loc[m, "domain_ratio"]).__len__() == 2 for _, m in pairs)


def test_evaluate_compares_laws(small):
    t = dl.evaluate(small, law=["dcpt", "chinchilla"], split=["all", "model_size", "ratio"], target="domain")
    means = t[t["fold"] == "mean"].set_index(["law", "split"])
    # the generating law generalises well on every split
    assert (means.loc["dcpt", "r2"] > 0.97).all()
    # a law without r cannot predict held-out ratios
    assert means.loc[("chinchilla", "ratio"), "r2"] < means.loc[("dcpt", "ratio"), "r2"] - 0.1
    assert len(t[(t["law"] == "dcpt") & (t["split"] == "ratio") & ~t["fold"].isin(["mean", "median"])]) == 36
    wide = dl.summary(t)
    assert ("r2", "dcpt") in wide.columns
    # the median over folds is there too, and summary can show it
    ratio = t[(t["law"] == "dcpt") & (t["split"] == "ratio") & ~t["fold"].isin(["mean", "median"])]
    med = t[(t["law"] == "dcpt") & (t["split"] == "ratio") & (t["fold"] == "median")]["r2"].iloc[0]
    assert med == pytest.approx(ratio["r2"].median())
    assert dl.summary(t, "median").loc[("ratio", "domain"), ("r2", "dcpt")] == pytest.approx(med)


def test_evaluate_matches_a_direct_fit_on_all(small):
    t = dl.evaluate(small, law="dcpt", split="all", target="general")
    f = dl.fit(small, target="general", warn=False)
    r2 = t[(t["fold"] == "all")]["r2"].iloc[0]
    assert r2 == pytest.approx(f["general"].metrics["r2"], abs=2e-3)


def test_ratio_split_needs_four_ratios():
    t = synthetic_table(0, ratios=np.array([0.0, 0.5, 1.0]))
    with pytest.raises(ValueError, match="at least 4 distinct"):
        dl.evaluate(t, split="ratio")


def test_two_sizes_warn_that_the_exponent_is_weakly_identified():
    t = synthetic_table(0, sizes=np.array([1e5, 1e6]))
    with pytest.warns(dl.FitWarning, match="only 2 distinct values of 'model_size'"):
        dl.fit(t, target="domain", warn=True)
