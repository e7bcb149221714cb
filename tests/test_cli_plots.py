"""Figures, the HTML report and the `dcpt` command line (fitting half: no torch needed)."""
import html
import json
import subprocess
import sys
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import dcpt_law as dl  # noqa: E402
from dcpt_law import cli, plots, report  # noqa: E402
from conftest import synthetic_table  # noqa: E402


@pytest.fixture(scope="module")
def small():
    """3 sizes x 4 token counts x 9 ratios, with base rows: quick to fit, enough for every figure."""
    from conftest import RATIOS, SIZES, TOKENS

    return synthetic_table(1, sizes=SIZES[:3], tokens=TOKENS[::2], ratios=RATIOS)


@pytest.fixture(scope="module")
def small_fit(small):
    return dl.fit(small, warn=False, bootstrap=8)


def _markers(ax):
    return [(ln.get_linestyle(), ln.get_marker()) for ln in ax.get_lines()]


def test_loss_vs_ratio_styles(small_fit, small):
    held = np.zeros(len(dl.table.fit_rows(small)), bool)
    held[::7] = True
    fig = plots.loss_vs_ratio(small_fit, small, heldout=held, n_tokens=3)
    axes = fig.get_axes()
    assert len(axes) == 2 and {a.get_title().split(",")[0] for a in axes} == {plots.TITLES["domain"], plots.TITLES["general"]}
    styles = _markers(axes[0])
    assert ("--", "None") in styles                        # fitted curves dashed
    assert any(m == "o" for _, m in styles)                 # fitted points circles
    assert any(m == "*" for _, m in styles)                 # held-out points stars
    assert "ratio" in axes[0].get_xlabel() and "nats" in axes[0].get_ylabel()
    # the dashed curve is the fitted law
    x, y = axes[0].get_lines()[0].get_data()
    N = small["model_size"].max()
    D = plots._pick(small.loc[small.model_size == N, "tokens"][small.tokens > 0], 3)[0]
    np.testing.assert_allclose(y, small_fit["domain"].predict(N, D, x, warn=False))


def test_parity_reports_r2(small_fit, small):
    fig = plots.parity(small_fit, small)
    labels = [t.get_text() for t in fig.get_axes()[0].get_legend().get_texts()]
    r2 = small_fit["domain"].metrics["r2"]
    assert any(f"{r2:.4f}" in lab for lab in labels)
    assert sum(lab.startswith("N = ") for lab in labels) == 3  # one colour per model size


def test_ratio_vs_size_and_tradeoff(small_fit, small):
    fig = plots.ratio_vs_size(small_fit, "3e7", tolerance=0.03)
    ax = fig.get_axes()[0]
    x, y = ax.get_lines()[0].get_data()
    want = [dl.predict_ratio(n, 3e7, fit=small_fit, warn=False).ratio for n in sorted(small_fit.base_losses.index)]
    np.testing.assert_allclose(y, want)
    assert ax.collections, "bootstrap interval band missing"
    # with the runs' own answer: the observed crossings as crosses, their line dotted
    with pytest.raises(ValueError, match="crossings are at D"):
        plots.ratio_vs_size(small_fit, "3e7", crossings=dl.crossing_scaling(small, tolerance=0.05))
    cs = dl.crossing_scaling(small, tolerance=0.03)
    ax = plots.ratio_vs_size(small_fit, cs.tokens, crossings=cs).get_axes()[0]
    seen = [ln for ln in ax.get_lines() if ln.get_marker() == "x"][0]
    np.testing.assert_allclose(seen.get_ydata(), cs.crossings["crossing"])
    dotted = [ln for ln in ax.get_lines() if ln.get_linestyle() == ":"][0]
    np.testing.assert_allclose(dotted.get_ydata()[[0, -1]], [float(cs.predict(n, warn=False)) for n in
                                                               dotted.get_xdata()[[0, -1]]])
    fig = plots.tradeoff(small_fit, 4e5, 3e7)
    star = [ln for ln in fig.get_axes()[0].get_lines() if ln.get_marker() == "*"][0]
    rec = dl.predict_ratio(4e5, 3e7, fit=small_fit, warn=False)
    assert star.get_xdata()[0] == pytest.approx(rec.domain_loss)
    assert f"{rec.ratio:.3f}" in star.get_label()
    front = [ln for ln in fig.get_axes()[0].get_lines() if ln.get_label().startswith("Pareto front")][0]
    np.testing.assert_allclose(front.get_xdata(), dl.ratio_frontier(4e5, 3e7, fit=small_fit)["domain_loss"])


def test_limited_domain_draws_each_budgets_curve_answer_and_runs(small_fit):
    """Usage 2's figure: per budget the law along D = D_d / r_d (dashed), its answer (diamond) at
    optimal_ratio_limited_domain's r_d and loss, and the runs on the line (stars) where given."""
    N, budgets = 4e5, [2e6, 8e6]
    runs = pd.DataFrame([{"tokens": Dd / r, "domain_ratio": r, "domain_loss": float(
        small_fit["domain"].predict(N, Dd / r, r, warn=False))} for Dd in budgets for r in (0.125, 0.25, 0.5, 1.0)])
    ax = plots.limited_domain(small_fit, N, budgets, observed=runs).get_axes()[0]
    dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    diamonds = [ln for ln in ax.get_lines() if ln.get_marker() == "D"]
    stars = [ln for ln in ax.get_lines() if ln.get_marker() == "*"]
    assert len(dashed) == len(diamonds) == len(stars) == 2 and ax.get_xscale() == "log"
    for Dd, curve, mark, seen in zip(budgets, dashed, diamonds, stars):
        x, y = curve.get_data()
        np.testing.assert_allclose(y, small_fit["domain"].predict(np.full(len(x), N), Dd / x, x, warn=False))
        best = dl.optimal_ratio_limited_domain(N, Dd, fit=small_fit, min_ratio=1 / 64, warn=False)
        assert mark.get_xdata()[0] == pytest.approx(best.ratio) and mark.get_ydata()[0] == pytest.approx(best.domain_loss)
        assert min(y) == pytest.approx(best.domain_loss, rel=1e-3)  # the diamond sits at the curve's lowest point
        np.testing.assert_allclose(seen.get_xdata(), [0.125, 0.25, 0.5, 1.0])
    assert len(plots.limited_domain(small_fit, N, "2M").get_axes()[0].get_lines()) == 2  # one budget, no runs


def test_cli_plot_adds_usage_2_with_the_runs_on_its_lines(tmp_path, small_fit, small):
    """`dcpt plot ... --domain-tokens`: the limited_domain figure beside the standard ones (at the largest swept
    size; this table logged no point of those lines, so the figure has the law alone)."""
    fit_path = tmp_path / "fit.json"
    small_fit.save(fit_path)
    cli.main(["plot", str(fit_path), _csv(tmp_path, small), "--out", str(tmp_path / "figs"),
              "--domain-tokens", "2M", "8M"])
    assert (tmp_path / "figs" / "limited_domain.png").exists() and (tmp_path / "figs" / "limited_domain.pdf").exists()
    assert (tmp_path / "figs" / "parity.png").exists()  # the standard figures still


def _csv(tmp_path, df) -> str:
    path = tmp_path / "losses.csv"
    df.to_csv(path, index=False)
    return str(path)


def test_save_all_writes_png_and_pdf(tmp_path, small_fit, small):
    paths = plots.save_all(small_fit, small, tmp_path)
    names = {p.stem for p in paths}
    assert names == {"loss_vs_ratio", "loss_vs_tokens", "parity", "ratio_vs_size", "tradeoff"}
    for p in paths:
        assert p.stat().st_size > 5000
        assert p.read_bytes()[:4] in (b"\x89PNG", b"%PDF")
    first = {p: p.read_bytes() for p in paths}
    again = plots.save_all(small_fit, small, tmp_path)  # the same figures: the same bytes, no temporary left
    assert {p: p.read_bytes() for p in again} == first
    assert sorted(tmp_path.iterdir()) == sorted(paths)


def test_report_is_self_contained(tmp_path, small_fit, small):
    path = report.write_report(small_fit, small, tmp_path, evaluate_splits=["all", "tokens"], laws=["additive"])
    text = path.read_text()
    for h in ("Recommendation", "Figures", "Fit", "Generalisation"):
        assert f"<h2>{h}" in text
    assert text.count("data:image/png;base64,") == 5
    assert "Mean over folds" in text and "Median over folds" in text
    rec = dl.predict_ratio(small_fit.base_losses.index.max(), small_fit["domain"].ranges["tokens"][1],
                           fit=small_fit, warn=False)
    assert f"r_d={rec.ratio:.4f}" in text
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check = dl.crossings.cross_check(small, rec.model_size, rec.tokens, 0.03, small_fit.domain, fit=small_fit)[1]
    # beside it, the law-free answer, and the law's own answer at the swept sizes against their runs
    assert check.startswith("CrossingPrediction(") and "\nthe law at the swept sizes" in check
    assert html.escape(check) in text
    # and usage 1 four ways with their median, at the same target
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cons = dl.usage1_consensus(small_fit, small, rec.model_size, rec.tokens, 0.03)
    assert html.escape(repr(cons)) in text and cons.answers.loc[0, "ratio"] == pytest.approx(rec.ratio)
    assert "src='http" not in text and "src=\"http" not in text  # nothing external
    # the generalisation table compares the laws asked for and always the fit's own
    assert small_fit["domain"].law.name == "dcpt"
    table = text[text.index("<h2>Generalisation"):]
    assert "<th>additive</th>" in table and "<th>dcpt</th>" in table


# --- command line ---------------------------------------------------------------------------------

def test_cli_fit_predict_roundtrip(tmp_path, small, capsys):
    csv = tmp_path / "losses.csv"
    small.to_csv(csv, index=False)
    out = tmp_path / "fit.json"
    assert cli.main(["fit", str(csv), "--out", str(out)]) == 0  # the recommended (anchored) pair
    assert "R2" in capsys.readouterr().out and out.exists()
    # usage 3 varies N, which an anchored law cannot: a one-line error that names the way out
    assert cli.main(["predict", str(out), "--model-size", "400K", "--tokens", "30M", "--flops", "1e15"]) == 2
    assert "N-based law" in capsys.readouterr().err
    # a size the fit has no base model for: the error names the flag that gives its base loss, and the flag works
    assert cli.main(["predict", str(out), "--model-size", "7B", "--tokens", "30M"]) == 2
    assert "hint: pass --base-general-loss LOSS" in capsys.readouterr().err
    assert cli.main(["predict", str(out), "--model-size", "7B", "--tokens", "30M", "--base-general-loss", "1.9"]) == 0
    assert "RatioResult(" in capsys.readouterr().out
    assert cli.main(["fit", str(csv), "--law", "dcpt", "--out", str(out)]) == 0
    capsys.readouterr()
    assert cli.main(["predict", str(out), "--model-size", "400K", "--tokens", "30M", "--json",
                     "--domain-tokens", "5M", "--flops", "1e15"]) == 0
    got = json.loads(capsys.readouterr().out)
    want = dl.predict_ratio(4e5, 3e7, fit=dl.load_fit(out), warn=False)
    assert got["ratio"]["ratio"] == pytest.approx(want.ratio)
    assert {"limited_domain", "compute"} <= set(got)
    # --frontier: r_d for every tolerance, as rows of dl.ratio_frontier
    assert cli.main(["predict", str(out), "--model-size", "400K", "--tokens", "30M", "--json", "--frontier", "5"]) == 0
    rows = pd.DataFrame(json.loads(capsys.readouterr().out)["frontier"])
    front = dl.ratio_frontier(4e5, 3e7, fit=dl.load_fit(out))
    assert 2 <= len(rows) <= 5 and rows["ratio"].isin(front["ratio"]).all()
    assert rows["general_loss_increase"].iloc[0] == front["general_loss_increase"].iloc[0]
    assert rows["general_loss_increase"].iloc[-1] == front["general_loss_increase"].iloc[-1]
    assert cli.main(["predict", str(out), "--model-size", "400K", "--tokens", "30M", "--frontier"]) == 0
    assert "frontier: the answer r_d for every tolerance" in capsys.readouterr().out
    assert cli.main(["predict", str(out), "--model-size", "400K", "--tokens", "30M", "--frontier", "1"]) == 2
    assert "--frontier 1" in capsys.readouterr().err


def test_cli_fit_one_law_per_loss(tmp_path, small, capsys):
    csv = tmp_path / "losses.csv"
    small.to_csv(csv, index=False)
    out = tmp_path / "pair.json"
    assert cli.main(["fit", str(csv), "--law", "domain:dcpt,general:total-data", "--out", str(out)]) == 0
    assert dl.load_fit(out).law == "domain:dcpt,general:total-data"
    # --start: the saved fit's law and parameters, now with bootstrap intervals
    boot = tmp_path / "boot.json"
    assert cli.main(["fit", str(csv), "--start", str(out), "--bootstrap", "6", "--out", str(boot)]) == 0
    capsys.readouterr()
    b, f = dl.load_fit(boot), dl.load_fit(out)
    assert b.law == f.law and b.has_bootstrap and b["general"].bootstrap.shape[0] == 6
    # the same optimum (in its flat directions, B and D0, the parameters may drift by ~1e-4)
    N, D, r = small["model_size"], small["tokens"].clip(lower=1), small["domain_ratio"]
    np.testing.assert_allclose(b.predict(N, D, r, "general"), f.predict(N, D, r, "general"), rtol=1e-5)
    assert cli.main(["fit", str(csv), "--start", str(out), "--law", "dcpt"]) == 2
    assert "start: its general-loss law is 'total-data', not 'dcpt'" in capsys.readouterr().err
    assert cli.main(["fit", str(csv), "--law", "domain:dcpt,oops"]) == 2
    assert "--law" in capsys.readouterr().err
    # a misspelt law for the report's table fails at once, before any figure is drawn
    assert cli.main(["report", str(out), str(csv), "--out", str(tmp_path / "r"), "--compare", "dcpt", "nope"]) == 2
    assert "nope" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_report_at_a_larger_model_needs_its_base_model(tmp_path, capsys, small_fit, small):
    """A target the sweep did not train: usage 1 needs its base model's general loss (L_g0, and G of the cells),
    asked for by name; given it, all three answers (law, crossings, cells) are at that target."""
    N, D = 4 * small_fit.base_losses.index.max(), small_fit["domain"].ranges["tokens"][1]
    with pytest.raises(ValueError, match="base_general_loss"):
        report.write_report(small_fit, small, tmp_path / "no", model_size=N, evaluate_splits=None)
    assert not (tmp_path / "no" / "report.html").exists()
    G = 0.97 * small_fit.base_losses["general_loss"].min()
    path = report.write_report(small_fit, small, tmp_path / "big", model_size=N, base_general_loss=G,
                               evaluate_splits=None)
    text = path.read_text()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = dl.predict_ratio(N, D, fit=small_fit, base_general_loss=G, warn=False)
        cons = dl.usage1_consensus(small_fit, small, N, D, 0.03, base_general_loss=G)
    assert f"r_d={rec.ratio:.4f}" in text and f"vs base {G:.4f}" in text
    assert f"G={G:.4f}" in repr(cons) and html.escape(repr(cons)) in text
    assert f"CrossingPrediction(N={dl.format_count(N)}" in text
    # the command line: the hint names the flag, and the flag exists
    fit_path, csv = tmp_path / "fit.json", tmp_path / "losses.csv"
    small_fit.save(fit_path)
    small.to_csv(csv, index=False)
    args = ["report", str(fit_path), str(csv), "--out", str(tmp_path / "cli"), "--model-size", str(N),
            "--compare", "dcpt"]
    assert cli.main(args) == 2
    assert "pass --base-general-loss LOSS" in capsys.readouterr().err
    assert cli.main([*args, "--base-general-loss", str(G)]) == 0
    assert f"vs base {G:.4f}" in (tmp_path / "cli" / "report.html").read_text()


def test_cli_law_pair_may_name_an_averaged_law():
    # the commas of mean(...) are not the pair's: the form Fit.law prints reads back
    pair = {"domain": "mean(dcpt, dcpt-scaled)", "general": "total-data-scaled-gain"}
    assert cli._law_arg(dl.fitting.pair_name(pair)) == pair
    assert cli._law_arg("domain:mean(dcpt,dcpt-scaled),general:dcpt") == {"domain": "mean(dcpt,dcpt-scaled)",
                                                                         "general": "dcpt"}
    assert cli._law_arg("mean(dcpt, dcpt-scaled)") == "mean(dcpt, dcpt-scaled)"


def test_cli_user_errors_are_one_line(tmp_path, small):
    proc = subprocess.run([sys.executable, "-m", "dcpt_law.cli", "fit", str(tmp_path / "nope.csv")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("dcpt: error:") and "nope.csv" in proc.stderr
    bad = small.copy()
    bad.loc[5, "domain_ratio"] = 1.5
    bad.to_csv(tmp_path / "bad.csv", index=False)
    proc = subprocess.run([sys.executable, "-m", "dcpt_law.cli", "fit", str(tmp_path / "bad.csv")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "domain_ratio" in proc.stderr


def test_cli_help_for_every_subcommand(capsys):
    for cmd in ("fit", "predict", "evaluate", "plot", "report", "sweep", "quickstart"):
        with pytest.raises(SystemExit) as e:
            cli.main([cmd, "--help"])
        assert e.value.code == 0
        assert "usage: dcpt" in capsys.readouterr().out


def test_sweep_of_several_configs_refuses_one_out_folder_before_any_work(tmp_path):
    pytest.importorskip("torch")
    with pytest.raises(SystemExit, match="several configs"):
        cli.main(["sweep", "a.toml", "b.toml", "--out", str(tmp_path)])  # not read: refused first
    assert not any(tmp_path.iterdir())


def test_quickstart_rejects_an_unknown_compare_law_before_any_work(tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "qs"
    assert cli.main(["quickstart", "--out", str(out), "--cache", str(tmp_path / "cache"),
                     "--compare", "dcpt", "dcpt-scaledd"]) == 2
    err = capsys.readouterr().err
    assert "dcpt-scaledd" in err and "register_law" in err
    assert not out.exists() and not (tmp_path / "cache").exists()  # no corpus prepared, no sweep started


def test_a_figure_that_fails_half_written_leaves_no_file_behind(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    fig, _ = plt.subplots()

    def crash(path, **kw):  # a write that dies half-way (disk full, a killed process)
        Path(path).write_bytes(b"%PDF-half")
        raise OSError("no space left on device")

    monkeypatch.setattr(fig, "savefig", crash)
    with pytest.raises(OSError, match="no space"):
        plots.save(fig, tmp_path / "broken")
    assert list(tmp_path.iterdir()) == []
