import numpy as np
import pandas as pd
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


def _curve(domain_loss, general_loss):
    r = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    return pd.DataFrame({"domain_ratio": r, "domain_loss": domain_loss, "general_loss": general_loss})


def test_ratio_regret_interpolates_and_respects_the_constraint():
    obs = _curve([3.0, 2.5, 2.2, 2.0, 1.9, 1.85], [4.0, 4.02, 4.06, 4.10, 4.2, 4.5])
    # L_g0 = 4.0, 3% -> L_g <= 4.12: ratios up to 0.6 meet it; the best of those is L_d = 2.0 at 0.6
    out = dl.ratio_regret(obs, 0.5, 4.0, 0.03)
    assert out["best_ratio"] == 0.6 and out["bracket"] == (0.4, 0.6)
    assert out["domain_loss"] == pytest.approx(2.1) and out["regret"] == pytest.approx(2.1 / 2.0 - 1)
    assert out["general_rise"] == pytest.approx(4.08 / 4.0 - 1)
    # a ratio past the constraint: negative regret, and the rise says why
    late = dl.ratio_regret(obs, 0.8, 4.0, 0.03)
    assert late["regret"] < 0 and late["general_rise"] > 0.03


def test_ratio_regret_crossing_is_where_the_general_loss_reaches_the_tolerance():
    obs = _curve([3.0, 2.5, 2.2, 2.0, 1.9, 1.85], [4.0, 4.02, 4.06, 4.10, 4.2, 4.5])
    # bound 4.12 lies between 4.10 (r_d 0.6) and 4.2 (0.8): a fifth of the way
    assert dl.ratio_regret(obs, 0.5, 4.0, 0.03)["crossing"] == pytest.approx(0.64)
    assert dl.ratio_regret(obs, 0.5, 4.0, 0.2)["crossing"] == 1.0  # every ratio meets 20%
    # a noisy pair (4.15, 4.11): raw, the curve first breaks the bound on its way to 4.15; isotonic, to their mean
    noisy = _curve([3.0, 2.5, 2.2, 2.0, 1.9, 1.85], [4.0, 4.15, 4.11, 4.2, 4.3, 4.5])
    assert dl.ratio_regret(noisy, 0.1, 4.0, 0.03)["crossing"] == pytest.approx(0.2 * 0.12 / 0.15)
    assert dl.ratio_regret(noisy, 0.1, 4.0, 0.03, smooth=True)["crossing"] == pytest.approx(0.2 * 0.12 / 0.13)


def test_ratio_regret_isotonic_pools_a_lucky_run():
    # a flat optimum from r_d = 0.6 on; one lucky run at 0.8 sits 2% below its neighbours
    obs = _curve([3.0, 2.5, 2.2, 2.0, 1.96, 2.0], [4.0, 4.01, 4.02, 4.03, 4.04, 4.05])
    raw = dl.ratio_regret(obs, 0.6, 4.0, 0.03)
    iso = dl.ratio_regret(obs, 0.6, 4.0, 0.03, smooth=True)
    assert raw["regret"] == pytest.approx(2.0 / 1.96 - 1)  # the raw minimum credits the lucky run
    assert 0 < iso["regret"] < raw["regret"] / 2  # pooled: 0.8 and 1.0 average to 1.98
    assert iso["regret"] == pytest.approx(2.0 / 1.98 - 1)


def test_limited_domain_regret_reads_the_line_of_one_budget_and_interpolates_in_log_ratio():
    """Usage 2 scored on runs: only the points with tokens * r_d = D_d form the line (other logged token counts stay
    in the table), L_d at the answer is linear in ln r_d between trained ratios, and bad input names the fix."""
    ratios, tokens = [0.125, 0.25, 0.5, 1.0], [1024, 2048, 4096, 8192]
    runs = pd.DataFrame([{"domain_ratio": r, "tokens": t, "domain_loss": 3.0 + r + 1000 / t}
                         for r in ratios for t in tokens])
    line = dl.limited_domain_line(runs, 512)  # r 0.125 at 4096, 0.25 at 2048, 0.5 at 1024 (1.0 would need 512)
    assert list(line.index) == [0.125, 0.25, 0.5]
    assert list(line) == pytest.approx([3.125 + 1000 / 4096, 3.25 + 1000 / 2048, 3.5 + 1000 / 1024])
    out = dl.limited_domain_regret(runs, 0.125 * 2 ** 0.5, "512")  # halfway between 0.125 and 0.25 in ln r_d
    assert out["best_ratio"] == 0.125 and out["bracket"] == (0.125, 0.25)
    assert out["domain_loss"] == pytest.approx((line.iloc[0] + line.iloc[1]) / 2)
    assert out["regret"] == pytest.approx(out["domain_loss"] / line.iloc[0] - 1) and out["regret"] > 0
    assert dl.limited_domain_regret(runs, 0.125, 512)["regret"] == 0
    with pytest.raises(ValueError, match="outside the line's trained ratios 0.125-0.5: train the ratios around it"):
        dl.limited_domain_regret(runs, 1.0, 512)
    with pytest.raises(ValueError, match=r"1 trained ratio\(s\) logged the line D \* r_d = 8.19K .* need >= 2"):
        dl.limited_domain_line(runs, 8192)  # only r_d = 1 at 8192 tokens
    with pytest.raises(ValueError, match=r"observed needs columns \['tokens'\]"):
        dl.limited_domain_line(runs.drop(columns="tokens"), 512)


def test_ratio_regret_names_bad_input():
    obs = _curve([3.0, 2.5, 2.2, 2.0, 1.9, 1.85], [4.0, 4.02, 4.06, 4.10, 4.2, 4.5])
    with pytest.raises(ValueError, match="general_loss"):
        dl.ratio_regret(obs.drop(columns="general_loss"), 0.5, 4.0)
    # even r_d = 0 breaks the tolerance (CPT on general data alone lifts L_g 33% over 3.0): no mixture can meet it
    with pytest.raises(ValueError, match=r"not even r_d = 0 .* general loss 33% above .* raise it above"):
        dl.ratio_regret(obs, 0.5, 3.0)
    with pytest.raises(ValueError, match="meets .*: train smaller ratios"):  # r_d = 0 not trained: it might
        dl.ratio_regret(obs[obs["domain_ratio"] > 0], 0.5, 3.9)
    with pytest.raises(ValueError, match="outside"):
        dl.ratio_regret(obs[obs["domain_ratio"] <= 0.6], 0.9, 4.0)
