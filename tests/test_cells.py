"""dcpt_law.cells: each logged (D, r) cell's loss extrapolated in the base model's general loss G."""
import json
import warnings

import numpy as np
import pandas as pd
import pytest

import dcpt_law as dl

G = {30_000: 5.5, 60_000: 5.3, 120_000: 5.1, 480_000: 4.8}  # base general loss of each size (nats)
TOKENS = (50_000, 100_000, 200_000)
RATIOS = (0.0, 0.2, 0.5, 0.8, 1.0)


def truth(G_, D, r):
    """A loss surface no law in the package has: each cell's own power of G, a bump in D for the general loss."""
    x = np.log(D / 1e5)
    slope_d, slope_g = 1.0 + 0.5 * r + 0.2 * x, 0.4 + 0.3 * r - 0.1 * x ** 2
    L_d = (3.0 + 2.0 * (1 - r) ** 2) * np.exp(-0.1 * x * r) * (G_ / 5.0) ** slope_d
    L_g = (4.5 + 0.8 * r ** 2 + 0.05 * np.exp(-x ** 2)) * (G_ / 5.0) ** slope_g
    return L_d, L_g


def table(sizes=G, seeds=(0,), scale=None, ratios=RATIOS):
    rows = []
    for N in sizes:
        for s in seeds:
            f = 1.0 if scale is None else scale[s]
            rows.append({"domain": "code", "model_size": N, "tokens": 0, "domain_ratio": 0.0, "seed": s,
                         "general_loss": G[N], "domain_loss": 9.0})
            for D in TOKENS:
                for r in ratios:
                    L_d, L_g = truth(G[N], D, r)
                    rows.append({"domain": "code", "model_size": N, "tokens": D, "domain_ratio": r, "seed": s,
                                 "general_loss": L_g * f, "domain_loss": L_d * f})
    return pd.DataFrame(rows)


def small():
    return table({n: G[n] for n in list(G)[:3]})


def test_cells_recover_a_per_cell_power_of_G_at_a_larger_size():
    cs = dl.cell_scaling(small())
    assert len(cs.lines) == len(TOKENS) * len(RATIOS) * 2 and (cs.lines["sizes"] == 3).all()
    with pytest.warns(dl.ExtrapolationWarning, match="1.4x the swept sizes' span past"):  # 4.6: 1.4 spans below 5.1
        p = cs.predict(200_000, np.array(RATIOS), base_general_loss=4.6)
    L_d, L_g = truth(4.6, 200_000, np.array(RATIOS))
    np.testing.assert_allclose(p["domain"], L_d, rtol=1e-10)
    np.testing.assert_allclose(p["general"], L_g, rtol=1e-10)
    assert cs.spans_past(4.6) == pytest.approx(np.log(5.1 / 4.6) / np.log(5.5 / 5.1))


def test_between_logged_ratios_a_loss_is_steep_where_its_corpus_is_scarce():
    """The domain loss shoots up as r_d -> 0, the general loss as r_d -> 1 (forgetting): the cells read both off
    between logged ratios within 1%, where a line in r (the geometric mean of the neighbours) misses by 9-13%."""
    def surface(G_, r):
        return (3.0 + 0.5 / (r + 0.02) ** 0.5) * G_ / 5.0, (4.5 + 0.2 / (1.02 - r)) * (G_ / 5.0) ** 0.5

    rows = [{"domain": "code", "model_size": N, "tokens": D, "domain_ratio": r, "seed": 0,
             **dict(zip(("domain_loss", "general_loss"), surface(G[N], r) if D else (9.0, G[N])))}
            for N in list(G)[:3] for D in (0, *TOKENS) for r in ((0.0,) if D == 0 else RATIOS)]
    cs = dl.cell_scaling(pd.DataFrame(rows))
    at = np.array([0.1, 0.35, 0.65, 0.9])
    got, want = cs.predict(100_000, at, base_general_loss=5.0, warn=False), surface(5.0, at)
    line = {t: np.sqrt(np.prod([cs.predict(100_000, ends, base_general_loss=5.0, warn=False)[t]
                                for ends in ((0.0, 0.2, 0.5, 0.8), (0.2, 0.5, 0.8, 1.0))], axis=0))
            for t in ("domain", "general")}  # ln L linear in r between the neighbours
    for t, w in zip(("domain", "general"), want):
        assert np.max(np.abs(got[t] / w - 1)) < 0.01
    assert abs(line["domain"][0] / want[0][0] - 1) > 0.09 and abs(line["general"][3] / want[1][3] - 1) > 0.09


def test_usage_1_by_the_cells_is_the_crossing_of_the_larger_size():
    from scipy.optimize import brentq

    true = brentq(lambda r: truth(4.8, 200_000, r)[1] - 1.03 * 4.8, 0.0, 1.0)  # L_g = 1.03 L_g0 of the surface
    big = table({480_000: 4.8}, ratios=np.linspace(0, 1, 11))
    observed = dl.observed_crossings(big[big["model_size"] == 480_000])  # its runs, linear between ratios
    runs = float(observed.loc[observed["tokens"] == 200_000, "crossing"].iloc[0])
    cs = dl.cell_scaling(table({n: G[n] for n in list(G)[:3]}, ratios=np.linspace(0, 1, 11)))
    got = cs.predict_ratio(200_000, base_general_loss=4.8, tolerance=0.03, warn=False)
    assert 0 < true < 1 and abs(got.ratio - true) < 1e-3 and abs(got.ratio - true) < 0.6 * abs(runs - true)
    assert got.general_rise == pytest.approx(0.03, abs=1e-3)  # the crossing sits on the tolerance
    assert "r_d=" in repr(got) and float(got) == got.ratio


def test_seeds_are_averaged_per_size_and_cell():
    # seeds 1.02x and 0.98x the truth: their mean is the truth, so the lines are the noise-free ones
    cs = dl.cell_scaling(table({n: G[n] for n in list(G)[:3]}, seeds=(0, 1), scale={0: 1.02, 1: 0.98}))
    clean = dl.cell_scaling(small())
    a = cs.predict(100_000, RATIOS, base_general_loss=5.0, warn=False)["domain"]
    b = clean.predict(100_000, RATIOS, base_general_loss=5.0, warn=False)["domain"]
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_model_size_as_x_recovers_a_power_of_N():
    df = small()
    N = df["model_size"].to_numpy(float)
    cpt = df["tokens"] > 0
    df.loc[cpt, "domain_loss"] = 4.0 * (N[cpt] / 1e5) ** -0.2 * (1.5 - df.loc[cpt, "domain_ratio"])
    cs = dl.cell_scaling(df, x="model_size")
    got = cs.predict(50_000, 0.5, model_size="480K", warn=False)["domain"]
    assert got == pytest.approx(4.0 * 4.8 ** -0.2 * 1.0, rel=1e-10)
    assert "0% of cells do not fall" in cs.report()  # in ln N a falling loss is the improving one
    with pytest.raises(ValueError, match="model_size=None"):
        cs.predict(50_000, 0.5, base_general_loss=4.8)


def test_a_token_count_as_printed_names_the_logged_one():
    df = small().replace({"tokens": {200_000: 524_288}})
    cs = dl.cell_scaling(df)
    assert cs.predict_ratio("524K", 5.0, warn=False).tokens == 524_288  # format_count prints 524,288 as 524K
    assert dl.crossing_scaling(df, tokens="524K").tokens == 524_288


def test_bad_input_names_the_field_and_the_fix():
    cs = dl.cell_scaling(small())
    with pytest.raises(ValueError, match="tokens=75K is not a token count"):
        cs.predict(75_000, 0.5, base_general_loss=5.0)
    with pytest.raises(ValueError, match="outside the ratios"):
        cs.predict(50_000, 1.2, base_general_loss=5.0)
    with pytest.raises(ValueError, match="base_general_loss=None"):
        cs.predict(50_000, 0.5)
    with pytest.raises(ValueError, match="need >= 3"):
        dl.cell_scaling(table({n: G[n] for n in list(G)[:2]}))
    no_base = small()
    no_base = no_base[~((no_base["tokens"] == 0) & (no_base["model_size"] == 60_000))]
    with pytest.raises(ValueError, match="model_size 60K has no base-model row"):
        dl.cell_scaling(no_base)
    with pytest.raises(ValueError, match="x='bogus'"):
        dl.cell_scaling(small(), x="bogus")
    with pytest.raises(ValueError, match="not even r_d = 0"):
        cs.predict_ratio(200_000, base_general_loss=4.0, tolerance=0.01, warn=False)


def test_a_flat_top_step_warns():
    df = small()
    top = (df["model_size"] == 120_000) & (df["tokens"] > 0)
    df.loc[top, ["domain_loss", "general_loss"]] *= 1.2  # the best base model ends worse in every cell
    with pytest.warns(dl.FitWarning, match="does not improve with a better base model"):
        cs = dl.cell_scaling(df)
    assert "do not fall with a better base model" in cs.report()


def test_cli(tmp_path, capsys):
    from dcpt_law.cli import main

    path = tmp_path / "losses.csv"
    small().to_csv(path, index=False)
    assert main(["cells", str(path), "--base-general-loss", "4.8", "--tokens", "200K", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    want = dl.cell_scaling(small()).predict_ratio(200_000, 4.8, warn=False)
    assert out["ratio"]["ratio"] == pytest.approx(want.ratio) and out["tokens"] == 200_000
    L_d, L_g = truth(4.8, 200_000, np.array(RATIOS))
    np.testing.assert_allclose([r["general_loss"] for r in out["losses"]], L_g, rtol=1e-9)
    assert main(["cells", str(path), "--base-general-loss", "4.8"]) == 0  # the report, at the largest D
    text = capsys.readouterr().out
    assert "Cells of domain 'code'" in text and "CellRatio(G=4.8000, D=200K" in text
    assert main(["cells", str(path), "--base-general-loss", "4.8", "--domain-tokens", "20K", "40K", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["limited_domain"]
    for got, budget in zip(out, (20_000, 40_000)):
        want = dl.cell_scaling(small()).limited_domain(budget, base_general_loss=4.8, warn=False)
        assert (got["ratio"], got["tokens"], got["domain_tokens"]) == (want.ratio, want.tokens, budget)
        assert [c["tokens"] for c in got["candidates"]] == list(want.candidates["tokens"])
    assert main(["cells", str(path), "--base-general-loss", "4.8", "--domain-tokens", "20K"]) == 0
    assert "usage 2, 20K domain tokens" in capsys.readouterr().out
    assert main(["cells", str(path), "--base-general-loss", "4.8", "--domain-tokens", "1M"]) == 2
    assert "domain_tokens=1M: at none of the logged D" in capsys.readouterr().err
    assert main(["cells", str(path), "--base-general-loss", "4.8", "--tokens", "7"]) == 2
    assert "tokens=7 is not a token count" in capsys.readouterr().err
    assert main(["cells", str(path), "--base-general-loss", "4.8", "--by-size"]) == 2
    assert "pass --model-size" in capsys.readouterr().err
    assert main(["cells", str(path), "--base-general-loss", "4.8", "--relative"]) == 2
    assert "add --by-size" in capsys.readouterr().err
    args = ["cells", str(path), "--base-general-loss", "4.8", "--by-size", "--model-size", "480K", "--relative", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    want = dl.cell_scaling(small(), x="model_size", relative=True)
    assert out["ratio"]["ratio"] == pytest.approx(want.predict_ratio(200_000, 4.8, model_size=480_000, warn=False).ratio)


def test_loss_vs_ratio_draws_the_cells_dotted_beside_the_law():
    from dcpt_law import plots

    df = table()
    f = dl.fit(small(), law="dcpt", warn=False)
    cs = dl.cell_scaling(small())
    fig = plots.loss_vs_ratio(f, df, model_size=480_000, tokens=[200_000], cells=cs)
    dotted = [ln for ln in fig.axes[1].get_lines() if ln.get_linestyle() == ":"]
    assert len(dotted) == 1 and "cells dotted" in fig.axes[0].get_legend().get_title().get_text()
    x = dotted[0].get_xdata()  # the cells' own curve between logged ratios, not the chords between them
    assert set(RATIOS) <= set(np.round(x, 12)) and len(x) > 100
    np.testing.assert_allclose(dotted[0].get_ydata(), cs.predict(200_000, x, base_general_loss=4.8, warn=False)["general"])
    assert not any(ln.get_linestyle() == ":" for ln in plots.loss_vs_ratio(f, df, model_size=480_000).axes[0].get_lines())


def test_loss_vs_ratio_draws_the_cells_alone_against_a_larger_sizes_runs():
    from dcpt_law import plots

    big = table({480_000: 4.8})
    cs = dl.cell_scaling(small())
    fig = plots.loss_vs_ratio(None, big, tokens=[100_000], cells=cs)
    for ax, t in zip(fig.axes, ("domain", "general")):
        (curve,) = [ln for ln in ax.get_lines() if ln.get_linestyle() == ":"]
        (runs,) = [ln for ln in ax.get_lines() if ln.get_marker() == "*"]
        # the curve sits at the larger size's G (from its base row) and passes through its runs (exact surface)
        np.testing.assert_allclose(np.interp(RATIOS, curve.get_xdata(), curve.get_ydata()), runs.get_ydata(),
                                   rtol=1e-9)
        assert not [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    no_base = big[big["tokens"] > 0]
    with pytest.raises(ValueError, match="base_general_loss"):
        plots.loss_vs_ratio(None, no_base, cells=cs)
    plots.loss_vs_ratio(None, no_base, cells=cs, base_general_loss=4.8)
    with pytest.raises(ValueError, match="cells="):
        plots.loss_vs_ratio(None, big)


def test_relative_cells_extrapolate_the_rise_over_the_base_model_in_ln_N():
    """relative=True, x="model_size": ln(L / G) per cell in ln N, read off at the target's N and times its own G.
    On a surface where the loss is the base model's G times a rise that grows with N (as re-warming a better-trained
    base did in our runs), and the target's base model is luckier than its size (G off the swept sizes' trend), the
    relative cells recover it exactly, usage 1 included, where the cells in ln G do not."""
    from scipy.optimize import brentq

    def rise(N, D, r):  # L / G: ln of it linear in ln N, growing with N and with the share of domain data
        return np.exp(-0.01 + (0.02 + 0.008 * np.log(N / 3e4)) * (1 + 0.3 * np.log(D / 5e4)) * r ** 2)

    sizes = {30_000: 5.5, 60_000: 5.3, 120_000: 5.1}
    rows = [{"domain": "code", "model_size": N, "tokens": D, "domain_ratio": r, "seed": 0,
             "general_loss": G_ * (rise(N, D, r) if D else 1.0), "domain_loss": (9.0 if D == 0 else
                                                                                 G_ * (1.6 - 0.5 * r))}
            for N, G_ in sizes.items() for D in (0, *TOKENS) for r in ((0.0,) if D == 0 else np.linspace(0, 1, 11))]
    rel = dl.cell_scaling(pd.DataFrame(rows), x="model_size", relative=True)
    assert rel.relative and "ln (L/G) = a + b ln N" in rel.report()
    N, G_ = 480_000, 4.95  # a lucky base: the trend in ln N would put it near 4.7
    p = rel.predict(200_000, np.array(RATIOS), model_size=N, base_general_loss=G_, warn=False)
    np.testing.assert_allclose(p["general"], G_ * rise(N, 200_000, np.array(RATIOS)), rtol=1e-10)
    np.testing.assert_allclose(p["domain"], G_ * (1.6 - 0.5 * np.array(RATIOS)), rtol=1e-10)
    true = brentq(lambda r: rise(N, 200_000, r) - 1.03, 0.0, 1.0)
    got = rel.predict_ratio(200_000, G_, 0.03, model_size=N, warn=False)
    assert float(got) == pytest.approx(true, abs=2e-3)  # the cubic between logged ratios, not the surface's form
    by_G = dl.cell_scaling(pd.DataFrame(rows)).predict_ratio(200_000, G_, 0.03, warn=False)
    assert abs(float(by_G) - true) > 0.05  # G says "a smaller model than its N": a smaller rise, a later crossing
    # its target needs both N and G, asked for by name
    with pytest.raises(ValueError, match="base_general_loss=None.*relative=True"):
        rel.predict(200_000, 0.5, model_size=N)
    with pytest.raises(ValueError, match="model_size=None"):
        rel.predict(200_000, 0.5, base_general_loss=G_)


def test_runs_from_bases_of_several_pre_training_budgets_warn():
    """G from longer pre-training is not G from a larger model: mixing base_tokens warns, one budget does not."""
    mixed = pd.concat([small().assign(base_tokens=1e6), small().assign(seed=1, base_tokens=5e6)], ignore_index=True)
    with pytest.warns(dl.FitWarning, match=r"pre-trained on 2 token counts \(1M, 5M\)"):
        dl.cell_scaling(mixed)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        dl.cell_scaling(small().assign(base_tokens=1e6))
        dl.cell_scaling(mixed, x="model_size")  # in N, G is not read
    assert not [w for w in seen if "pre-trained on" in str(w.message)]


def test_usage_2_by_the_cells_reads_the_line_at_each_logged_D_and_takes_its_lowest_point():
    """With D_d domain tokens the line D * r_d = D_d meets each logged D at r_d = D_d / D: the cells give the
    larger size's L_d there (exact where that ratio was trained), skip a D whose ratios cannot reach it (r_d > 1),
    and answer the lowest point."""
    cs = dl.cell_scaling(table({n: G[n] for n in list(G)[:3]}, ratios=(0.0, 0.1, 0.2, 0.4, 0.8, 1.0)))
    a = cs.limited_domain(20_000, base_general_loss=4.6, warn=False)
    want = {D: truth(4.6, D, 20_000 / D)[0] for D in TOKENS}  # r_d 0.4, 0.2, 0.1: all trained
    np.testing.assert_allclose(a.candidates.set_index("tokens")["domain_loss"], pd.Series(want), rtol=1e-10)
    best = min(want, key=want.get)
    assert (a.tokens, a.ratio, float(a)) == (best, 20_000 / best, 20_000 / best)
    assert a.domain_loss == pytest.approx(want[best]) and a.candidates["best"].sum() == 1
    with warnings.catch_warnings():  # inside the swept sizes' G, its best point inside the line: nothing to say
        warnings.simplefilter("error")
        assert cs.limited_domain(20_000, base_general_loss=5.2).tokens == best
    one = cs.limited_domain("150K", base_general_loss=4.6, warn=False)  # r_d 3 and 1.5 at 50K and 100K: skipped
    assert list(one.candidates["tokens"]) == [200_000] and one.ratio == pytest.approx(0.75)
    with pytest.raises(ValueError, match=r"domain_tokens=300K: at none of the logged D \(50K, 100K, 200K\)"):
        cs.limited_domain(300_000, base_general_loss=4.6, warn=False)
    with pytest.raises(ValueError, match="domain_tokens=0 must be > 0"):
        cs.limited_domain(0, base_general_loss=4.6)


def test_usage_2_by_the_cells_warns_when_its_best_point_is_the_largest_logged_D():
    """Where tokens keep paying (L_d falling fast in D), the line's lowest point is its longest run: the sweep
    stopped short of the answer, and the cells say so."""
    rows = []
    for N, G_ in list(G.items())[:3]:
        rows.append({"domain": "code", "model_size": N, "tokens": 0, "domain_ratio": 0.0, "general_loss": G_,
                     "domain_loss": 9.0})
        for D in TOKENS:
            for r in (0.1, 0.2, 0.4, 1.0):
                rows.append({"domain": "code", "model_size": N, "tokens": D, "domain_ratio": r, "general_loss": G_,
                             "domain_loss": (3.0 + 0.3 * (1 - r)) * (D / 1e5) ** -0.3 * G_ / 5.0})
    cs = dl.cell_scaling(pd.DataFrame(rows))
    with pytest.warns(dl.ExtrapolationWarning, match=r"largest D the sweep logged there \(200K, r_d = 0.1\)"):
        a = cs.limited_domain(20_000, base_general_loss=5.0)
    assert (a.tokens, a.ratio) == (200_000, pytest.approx(0.1))
    with pytest.warns(dl.ExtrapolationWarning, match=r"only one point of the line D \* r_d = 160K .*D = 200K, r_d = 0.8"):
        assert cs.limited_domain(160_000, base_general_loss=5.0).tokens == 200_000  # r_d 3.2 and 1.6 skipped
