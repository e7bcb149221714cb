import json
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import dcpt_law as dl
from dcpt_law.cli import main
from dcpt_law.crossings import MISS, cross_check

T = 0.03
RATIOS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def crossing_table(crossings: dict, tokens=(1e5, 2e5), seeds=(0,), offset=0.0):
    """A sweep whose observed crossing at size N is ``crossings[N]`` exactly: L_g linear in r_d, reaching
    (1 + T) L_g0 there (linear interpolation between trained ratios is then exact); L_d falls with r_d.
    ``offset``: seed s shifts its general losses by (s - mean seed) * offset."""
    rows = []
    for N, c in crossings.items():
        g0 = 4 + 10 / N ** 0.2
        for s in seeds:
            rows.append(dict(domain="code", model_size=N, tokens=0, domain_ratio=0.0, general_loss=g0,
                             domain_loss=6.0, seed=s))
            for D in tokens:
                for r in RATIOS:
                    shift = (s - np.mean(seeds)) * offset
                    rows.append(dict(domain="code", model_size=N, tokens=D, domain_ratio=r,
                                     general_loss=g0 * (1 + T * r / c) + shift, domain_loss=5 - r, seed=s))
    return pd.DataFrame(rows)


def line(a, b, sizes):
    return {N: a + b * np.log(N) for N in sizes}


def test_recovers_the_line_and_predicts_on_it():
    a, b = 1.2, -0.04
    cs = dl.crossing_scaling(crossing_table(line(a, b, [1e4, 3e4, 1e5, 3e5])), tolerance=T)
    assert cs.intercept == pytest.approx(a, abs=1e-9) and cs.slope == pytest.approx(b, abs=1e-9)
    assert cs.residual_sd < 1e-9 and cs.dof == 2 and cs.tokens == 2e5  # the largest D every size logged
    p = cs.predict("1M")
    assert float(p) == pytest.approx(a + b * np.log(1e6), abs=1e-9)
    assert p.interval[0] == pytest.approx(float(p), abs=1e-6) == pytest.approx(p.interval[1], abs=1e-6)
    assert "r_d=" in repr(p) and "ln N" in cs.report()


def test_seeds_are_averaged_per_ratio():
    sizes = line(1.2, -0.04, [1e4, 3e4, 1e5])
    one = dl.observed_crossings(crossing_table(sizes), T)
    two = dl.observed_crossings(crossing_table(sizes, seeds=(0, 1), offset=0.02), T)
    np.testing.assert_allclose(two["crossing"], one["crossing"], atol=1e-12)
    assert not one["censored"].any() and (one["ratios"] == len(RATIOS)).all()


def test_a_base_row_of_another_domain_gives_l_g0():
    sizes = line(1.2, -0.04, [1e4, 3e4, 1e5])
    df = crossing_table(sizes)
    moved = (df["tokens"] == 0) & (df["model_size"] == 1e4)
    df.loc[moved, "domain"] = "law"  # the same base model, logged under another domain
    np.testing.assert_allclose(dl.observed_crossings(df, T, "code")["crossing"],
                               dl.observed_crossings(crossing_table(sizes), T)["crossing"])


def test_interval_is_the_textbook_prediction_interval():
    rng = np.random.default_rng(0)
    sizes = [1e4, 2e4, 5e4, 1e5, 3e5]
    c = {N: v + rng.normal(0, 0.01) for N, v in line(1.2, -0.04, sizes).items()}
    cs = dl.crossing_scaling(crossing_table(c), tolerance=T)
    x, y = np.log(sizes), np.array([c[N] for N in sizes])
    lr = stats.linregress(x, y)
    s = np.sqrt(np.sum((y - lr.intercept - lr.slope * x) ** 2) / (len(x) - 2))
    x0 = np.log(1e6)
    half = stats.t.ppf(0.95, len(x) - 2) * s * np.sqrt(1 + 1 / len(x) + (x0 - x.mean()) ** 2 / np.sum((x - x.mean()) ** 2))
    p = cs.predict(1e6, level=0.9)
    mid = lr.intercept + lr.slope * x0
    assert float(p) == pytest.approx(mid, abs=1e-9)
    assert p.interval == pytest.approx((mid - half, mid + half), abs=1e-9)
    assert cs.predict(1e6, level=0.5).interval[1] < p.interval[1]  # a lower level, a narrower interval


def test_sizes_without_a_crossing_are_left_out_with_a_warning():
    sizes = line(1.2, -0.04, [1e4, 3e4, 1e5, 3e5])
    df = crossing_table(sizes)
    # the smallest size: CPT alone raises L_g by 5% at every ratio, over the 3% tolerance
    small = (df["model_size"] == 1e4) & (df["tokens"] > 0)
    df.loc[small, "general_loss"] = df.loc[(df["model_size"] == 1e4) & (df["tokens"] == 0), "general_loss"].iloc[0] * 1.05
    with pytest.warns(UserWarning, match="not even r_d = 0"):
        cs = dl.crossing_scaling(df, tolerance=T)
    assert list(cs.crossings["model_size"]) == [3e4, 1e5, 3e5]
    assert cs.slope == pytest.approx(-0.04, abs=1e-9)


def test_censored_crossing_warns():
    c = line(1.2, -0.04, [1e4, 3e4, 1e5])
    c[1e4] = 1.5  # L_g never reaches the bound: the crossing is the last trained ratio, 1.0
    with pytest.warns(dl.FitWarning, match="edge"):
        cs = dl.crossing_scaling(crossing_table(c), tolerance=T)
    assert cs.crossings["crossing"].iloc[0] == 1.0 and cs.crossings["censored"].iloc[0]


def test_far_extrapolation_warns():
    cs = dl.crossing_scaling(crossing_table(line(1.2, -0.04, [1e4, 3e4, 1e5])), tolerance=T)
    with pytest.warns(dl.ExtrapolationWarning, match="100x"):
        cs.predict(1e7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cs.predict(1e6)  # 10x: no warning
        cs.predict(1e7, warn=False)


@pytest.mark.parametrize("change, kwargs, match", [
    (lambda df: df[df["model_size"] != 1e5], {}, ">= 3 distinct model sizes"),
    (lambda df: df[~((df["model_size"] == 1e4) & (df["tokens"] == 0))], {}, "tokens == 0"),
    (lambda df: df, {"tokens": "150K"}, "not a token count the sweep logged"),
    (lambda df: df, {"tolerance": 3.0}, "tolerance=3.0"),
    (lambda df: df[(df["domain_ratio"] == 0.2) | (df["tokens"] == 0)], {}, ">= 2"),
])
def test_bad_input_is_named(change, kwargs, match):
    df = change(crossing_table(line(1.2, -0.04, [1e4, 3e4, 1e5])))
    with pytest.raises(ValueError, match=match):
        dl.crossing_scaling(df, **{"tolerance": T, **kwargs})


def test_cli(tmp_path, capsys):
    path = tmp_path / "losses.csv"
    crossing_table(line(1.2, -0.04, [1e4, 3e4, 1e5])).to_csv(path, index=False)
    assert main(["crossings", str(path), "--model-size", "400K", "--tokens", "100K", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tokens"] == 1e5 and out["prediction"]["ratio"] == pytest.approx(1.2 - 0.04 * np.log(4e5), abs=1e-9)
    assert main(["crossings", str(path), "--tokens", "7"]) == 2
    assert "not a token count" in capsys.readouterr().err


def _law_table_and_truth(general=None):
    """A noise-free sweep from conftest's true D-CPT laws on a fine ratio grid (so its observed crossings are
    the laws' own answers to the grid's step), and a Fit of the true laws, or with ``general`` params instead."""
    from conftest import SIZES, TRUE_DOMAIN, TRUE_GENERAL, synthetic_table
    from dcpt_law.laws import DCPT

    df = synthetic_table(noise=0.0, sizes=SIZES[:3], ratios=np.linspace(0, 1, 101))
    base = df[df["tokens"] == 0].set_index("model_size")[["general_loss", "domain_loss"]]
    fit = dl.Fit({"domain": dl.LawFit(DCPT, "domain", TRUE_DOMAIN),
                  "general": dl.LawFit(DCPT, "general", general or TRUE_GENERAL)}, domain="code", base=base)
    return df, fit


def test_law_misses_are_near_zero_for_the_law_that_made_the_runs():
    df, truth = _law_table_and_truth()
    m = dl.law_misses(truth, df, tolerance=T)
    assert list(m["model_size"]) == sorted(df["model_size"].unique()) and (m["tokens"] == df["tokens"].max()).all()
    assert m["crossing"].between(0.05, 0.95).all()  # real crossings, inside the grid
    np.testing.assert_allclose(m["law"], m["crossing"], atol=0.01)  # the grid's step
    np.testing.assert_allclose(m["miss"], m["law"] - m["crossing"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, line_ = cross_check(df, 4e6, df["tokens"].max(), T, fit=truth)
    assert "largest miss" in line_ and "r_d=" in line_


def test_a_law_that_misses_its_own_sizes_warns(tmp_path, capsys):
    from conftest import TRUE_GENERAL

    df, truth = _law_table_and_truth()
    _, wrong = _law_table_and_truth({**TRUE_GENERAL, "E": TRUE_GENERAL["E"] * 1.03})  # reads the rise too high
    m = dl.law_misses(wrong, df, tolerance=T)
    assert (m["miss"] < -MISS).any()  # it stops early
    with pytest.warns(dl.FitWarning, match=r"at model_size 1.6M, D = 100M the law's r_d misses the observed best "
                      r"feasible ratio by -0.079"):
        cross_check(df, 4e6, df["tokens"].max(), T, fit=wrong)
    path, fit_path = tmp_path / "losses.csv", tmp_path / "fit.json"
    df.to_csv(path, index=False)
    wrong.save(fit_path)
    assert main(["crossings", str(path), "--fit", str(fit_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["miss"] for r in out["law_misses"]] == pytest.approx(list(m["miss"]), abs=1e-9)


def test_pool_fits_one_slope_and_an_intercept_per_domain():
    sizes = [1e4, 2e4, 5e4, 1e5]
    lines = {"code": line(1.2, -0.04, sizes), "law": line(1.0, -0.04, sizes)}
    exact = pd.concat([crossing_table(c).assign(domain=d) for d, c in lines.items()], ignore_index=True)
    cs = dl.crossing_scaling(exact, tolerance=T, domain="law", pool=True)
    assert cs.pooled == ("code",) and cs.dof == 8 - 3
    assert (cs.intercept, cs.slope) == pytest.approx((1.0, -0.04), abs=1e-9) and cs.residual_sd < 1e-9
    # with noise: the textbook joint least squares and prediction interval, built here from the crossings
    rng = np.random.default_rng(1)
    noisy = {d: {N: v + rng.normal(0, 0.01) for N, v in c.items()} for d, c in lines.items()}
    music = crossing_table(line(1.1, -0.04, sizes[:2])).assign(domain="music")  # two sizes: no line, left out
    df = pd.concat([crossing_table(c).assign(domain=d) for d, c in noisy.items()] + [music], ignore_index=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cs = dl.crossing_scaling(df, tolerance=T, domain="code", pool=True)
    X = np.array([[d == "code", d == "law", np.log(N)] for d in ("code", "law") for N in sizes], float)
    y = np.array([noisy[d][N] for d in ("code", "law") for N in sizes])
    beta = np.linalg.solve(X.T @ X, X.T @ y)
    s = np.sqrt(np.sum((y - X @ beta) ** 2) / (len(y) - 3))
    x0 = np.array([1.0, 0.0, np.log(1e6)])
    half = stats.t.ppf(0.95, len(y) - 3) * s * np.sqrt(1 + x0 @ np.linalg.solve(X.T @ X, x0))
    p = cs.predict(1e6, warn=False)
    assert (cs.intercept, cs.slope, cs.residual_sd) == pytest.approx((beta[0], beta[2], s), rel=1e-9)
    assert float(p) == pytest.approx(x0 @ beta, abs=1e-9)
    assert p.interval == pytest.approx((x0 @ beta - half, x0 @ beta + half), abs=1e-9)
    assert "slope shared with law" in cs.report()
    # beside a law's answer (report, figures) the table's other domains are pooled by default
    assert cross_check(df, 1e6, 2e5, T, domain="code")[0].pooled == ("law",)
    assert cross_check(df, 1e6, 2e5, T, domain="code", pool=False)[0].pooled == ()
    with pytest.warns(UserWarning, match="no other domain"):  # one domain: its own line, said so
        alone = dl.crossing_scaling(crossing_table(noisy["code"]), tolerance=T, pool=True)
    assert alone.pooled == () and alone.dof == 2


def test_cli_pool(tmp_path, capsys):
    path = tmp_path / "losses.csv"
    sizes = [1e4, 3e4, 1e5]
    pd.concat([crossing_table(line(1.2, -0.04, sizes)), crossing_table(line(1.0, -0.03, sizes)).assign(domain="law")]
              ).to_csv(path, index=False)
    assert main(["crossings", str(path), "--domain", "law", "--pool", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["pooled"] == ["code"] and out["dof"] == 6 - 3


def test_a_domain_loss_that_turns_up_before_r_d_1_at_every_size_warns():
    sizes = line(1.2, -0.04, [1e4, 3e4, 1e5])
    df = crossing_table(sizes)
    last = df["tokens"] > 0

    def turned(at_sizes, rise=0.03):  # lowest at r_d 0.8, then up to (1 + rise) x that at r_d 1
        out = df.copy()
        up = last & (out["domain_ratio"] == 1.0) & out["model_size"].isin(at_sizes)
        out.loc[up, "domain_loss"] = (5 - 0.8) * (1 + rise)
        return out

    t = dl.domain_loss_turns(turned(sizes), domain="code")
    assert list(t["lowest_at"]) == [0.8] * 3 and t["rise"].to_numpy() == pytest.approx([0.03] * 3)
    assert t["tokens"].iloc[0] == 2e5  # the largest D every size logged
    with pytest.warns(dl.FitWarning, match="does not fall with r_d all the way"):
        _, text = cross_check(turned(sizes), "1M", 2e5, T, "code")
    assert "lowest at r_d 0.8 / 0.8 / 0.8" in text
    with pytest.warns(dl.FitWarning, match=r"answer r_d = 0\.900 lies past it"):
        dl.crossings.turns_line(t, answer=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # quiet: a loss that falls, a turn at one size only (noise), an answer below
        for quiet in (df, turned([1e5]), turned(sizes, rise=0.005)):
            assert "does not fall" not in cross_check(quiet, "1M", 2e5, T, "code")[1]
        assert dl.crossings.turns_line(t, answer=0.75) == ""
