import warnings

import numpy as np
import pandas as pd
import pytest

import dcpt_law as dl
from dcpt_law.laws import DCPT
from conftest import RATIOS, SIZES, TOKENS, TRUE_DOMAIN, TRUE_GENERAL, assert_jacobian_matches, synthetic_table


def _grid():
    return [a.ravel() for a in np.meshgrid(SIZES, TOKENS, RATIOS, indexing="ij")]


def _true_fit(f):
    """A Fit with the true parameters (same base losses), to compute the true recommendation."""
    t = dl.Fit({"domain": dl.LawFit(DCPT, "domain", TRUE_DOMAIN), "general": dl.LawFit(DCPT, "general", TRUE_GENERAL)},
               base=f.base_losses)
    return t


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_known_law(seed):
    """0.5% noise on 4 x 8 x 9 points: predictions within 1% of the truth everywhere on the grid,
    and predict_ratio within 0.02 of the ratio the true law recommends."""
    f = dl.fit(synthetic_table(seed), warn=False)
    N, D, r = _grid()
    for target, true in (("domain", TRUE_DOMAIN), ("general", TRUE_GENERAL)):
        pred = f.predict(N, D, r, target=target)
        truth = DCPT.predict(true, N, D, r if target == "domain" else 1 - r)
        assert np.max(np.abs(pred / truth - 1)) < 0.01, target
        assert f[target].metrics["r2"] > 0.99
    truth_fit = _true_fit(f)
    # well-conditioned targets across the grid (where L_g is flat in r_d, a binding constraint's
    # crossing point moves by dL/(dL_g/dr): that case is tested exactly in test_optimisation)
    for N0, D0, T in ((4e5, 3e7, 0.03), (1.6e6, 1e8, 0.03), (1e5, 1e8, 0.02), (6.4e6, 1e8, 0.03)):
        want = dl.predict_ratio(N0, D0, fit=truth_fit, tolerance=T, warn=False)
        got = dl.predict_ratio(N0, D0, fit=f, tolerance=T, warn=False)
        assert abs(got.ratio - want.ratio) < 0.02, (N0, D0, got, want)


def test_fit_beats_true_parameters_objective(fitted, table):
    """The global search reaches an objective at least as low as the generating parameters'."""
    from dcpt_law.search import objective
    from dcpt_law.table import fit_rows, law_inputs

    X = law_inputs(fit_rows(table), "domain")
    ctx = DCPT.prepare(X["N"], X["D"], X["r"])
    true = objective(DCPT, DCPT.raw(np.array([list(TRUE_DOMAIN.values())]), ctx), ctx, np.log(X["loss"]), 1.0, 1e-3)[0]
    assert fitted["domain"].objective <= true * (1 + 1e-9)


def test_dcpt_agrees_with_chinchilla_at_fixed_ratio(fitted, table):
    """At fixed r the D-CPT law is a Chinchilla law: both fits agree on that slice."""
    for r in (0.2, 0.8):
        sl = table[np.isclose(table["domain_ratio"], r)]
        ch = dl.fit(sl, law="chinchilla", target="domain", warn=False)
        N, D = (a.ravel() for a in np.meshgrid(SIZES, TOKENS, indexing="ij"))
        a = fitted.predict(N, D, r, target="domain")
        b = ch.predict(N, D, r, target="domain")
        assert np.max(np.abs(a / b - 1)) < 0.01


def test_predict_shapes_and_strings(fitted):
    one = fitted.predict("1M", "10M", 0.3, target="domain")
    assert isinstance(one, float)
    arr = fitted.predict([1e5, 1e6], 1e7, [0.2, 0.4], target="general")
    assert arr.shape == (2,)
    df = fitted.predict(1e6, [1e7, 2e7, 4e7], 0.5)
    assert list(df.columns) == ["model_size", "tokens", "domain_ratio", "domain_loss", "general_loss"]
    assert (np.diff(df["domain_loss"]) < 0).all()  # more tokens, lower loss
    # the general law takes r_d and uses r_g = 1 - r_d
    assert np.isclose(fitted["general"].predict(1e6, 1e7, 0.3),
                      DCPT.predict(fitted["general"].params, 1e6, 1e7, 0.7))


def test_evaluates_at_ratio_zero_and_one(fitted):
    v = fitted.predict(1e6, 1e7, [0.0, 1.0])
    assert np.isfinite(v[["domain_loss", "general_loss"]].to_numpy()).all()
    # exact formula at r = 0: the B term vanishes
    p = TRUE_DOMAIN
    direct = p["E"] + p["A"] / 1e6 ** p["alpha"] + p["C"] / p["eps"] ** p["gamma"]
    assert np.isclose(DCPT.predict(p, 1e6, 1e7, 0.0), direct)
    direct1 = p["E"] + p["A"] / 1e6 ** p["alpha"] + p["B"] / 1e7 ** p["beta"] + p["C"] / (1 + p["eps"]) ** p["gamma"]
    assert np.isclose(DCPT.predict(p, 1e6, 1e7, 1.0), direct1)


def test_save_load_roundtrip(tmp_path, fitted):
    path = fitted.save(tmp_path / "fit.json")
    back = dl.load_fit(path)
    N, D, r = _grid()
    for t in ("domain", "general"):
        np.testing.assert_array_equal(back.predict(N, D, r, target=t), fitted.predict(N, D, r, target=t))
    assert back.params == fitted.params
    assert back.base_losses.equals(fitted.base_losses)
    text = path.read_text()
    assert '"schema_version": 1' in text and "package_version" in text
    assert not list(tmp_path.glob("*.tmp"))
    # the code version of the fit travels with it, not the version of whoever loads it
    from dcpt_law.provenance import git_commit

    assert fitted.code_version == git_commit() and back.code_version == fitted.code_version
    back.code_version = "abc123"
    assert dl.load_fit(back.save(tmp_path / "again.json")).code_version == "abc123"


def test_report_is_readable(fitted):
    rep = fitted.report()
    for word in ("domain loss", "general loss", "R2", "alpha", "stderr", "fitted on N"):
        assert word in rep
    assert fitted.metrics.loc["domain", "r2"] > 0.99


def test_bootstrap_intervals_bracket_truth():
    f = dl.fit(synthetic_table(3), bootstrap=40, warn=False)
    b = f["domain"].bootstrap
    assert b.shape == (40, 9)
    lo, hi = np.quantile(b, [0.0, 1.0], axis=0)
    names = DCPT.param_names
    # the well-identified exponents: the truth lies inside the bootstrap spread
    for k in ("alpha", "beta"):
        i = names.index(k)
        assert lo[i] - 0.02 <= TRUE_DOMAIN[k] <= hi[i] + 0.02, k
    res = dl.predict_ratio(1.6e6, 3e7, fit=f, warn=False)
    assert res.interval is not None and res.interval[0] <= res.ratio + 1e-9 and res.ratio - 1e-9 <= res.interval[1]
    samples = f["domain"].predict_samples(1e6, 1e7, 0.5)
    assert samples.shape == (40,)


def test_register_custom_law(table):
    def mult(N, D, r, E, A, a):
        return E + A / (N * D * (r + 0.05)) ** a

    dl.register_law("test-mult", mult,
                    params=[dl.Param("E", 1e-3, 10, (1.0, 2.0), log=True),
                            dl.Param("A", 1e-6, 1e12, (1e2, 1e4), log=True),
                            dl.Param("a", 0.0, 2.0, (0.1, 0.3))], overwrite=True)
    # data drawn from the custom law itself: the finite-difference fitter must recover it
    truth = dict(E=1.7, A=3e3, a=0.3)  # the A-term spans 0.1-3.7 nats over the grid
    df = table[table["tokens"] > 0].copy()
    rng = np.random.default_rng(3)
    df["domain_loss"] = mult(df["model_size"], df["tokens"], df["domain_ratio"], **truth) * (
        1 + 0.003 * rng.standard_normal(len(df)))
    f = dl.fit(df, law="test-mult", target="domain", warn=False)
    assert f["domain"].metrics["r2"] > 0.99
    for k, v in truth.items():
        assert f["domain"].params[k] == pytest.approx(v, rel=0.1), k
    with pytest.raises(ValueError, match="already registered"):
        dl.register_law("test-mult", lambda N, D, r, E: E, params=[dl.Param("E", 0.1, 1, (0.5,))])
    with pytest.raises(ValueError, match="unknown law"):
        dl.fit(table, law="nope")


def test_warns_on_extrapolation(fitted):
    with pytest.warns(dl.ExtrapolationWarning, match=r"model_size 7B is more than 10x outside the fitted range"):
        fitted.predict(7e9, 1e7, 0.5, target="domain")
    with pytest.warns(dl.ExtrapolationWarning, match="tokens"):
        fitted.predict(1e6, 1e11, 0.5, target="domain")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fitted.predict(1e6, 1e7, 0.5, target="domain")  # inside: silent


def test_warns_on_non_monotone_and_bound(table, tmp_path):
    # D-CPT with eta < 1 rises in r just above r = 0: the monotonicity check must say so
    with pytest.warns(dl.FitWarning, match="not monotone decreasing in its own ratio"):
        dl.fit(table, target="domain")
    # data with no dependence on D: the data term vanishes and its parameters are unidentified
    flat = table.copy()
    flat["domain_loss"] = 2.0 + 30.0 / flat["model_size"] ** 0.3 + 0.001 * np.sin(np.arange(len(flat)))
    with pytest.warns(dl.FitWarning, match=r"B-term .* not identified: the data show no dependence on D"):
        dl.fit(flat, law="chinchilla", target="domain")
    # loss that *rises* with model size: alpha (>= 0) can only sit on its lower bound
    rising = table.copy()
    rising["domain_loss"] = 1.0 + 0.05 * np.log(rising["model_size"]) + 200.0 / rising["tokens"].clip(1) ** 0.3
    with pytest.warns(dl.FitWarning, match="'alpha' = .* ended at its lower bound"):
        f = dl.fit(rising, law="chinchilla", target="domain")
    # the diagnostics stay with the fit: in its report and through save / load
    assert any("'alpha'" in d for d in f["domain"].diagnostics)
    assert "warning: " in f.report() and "'alpha'" in f.report()
    f.save(tmp_path / "f.json")
    assert dl.load_fit(tmp_path / "f.json")["domain"].diagnostics == f["domain"].diagnostics


def test_bound_check_reads_the_centred_value_a_scaled_law_is_bounded_in():
    """dcpt-scaled's E multiplies G^kappa and is bounded on its centred value E*exp(kappa*mean log G): an E below
    the nominal bound 1e-4 is fine while its centred value is inside; at the bound, the warning says which."""
    from dcpt_law.diagnostics import check_bounds
    from dcpt_law.fitting import LawFit
    from dcpt_law.laws import SCALED

    N, D, r = _grid()
    G = np.full(N.shape, np.e ** 2)  # mean log G = 2: centred E = E * e^(2 kappa)
    ctx = SCALED.prepare(N, D, r, G=G)
    p = dict(E=0.01 * np.exp(-6.0), kappa=3.0, B=1.0, beta=0.3, eta=0.5, C=0.3, gamma=0.5, eps=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("error", dl.FitWarning)
        check_bounds(LawFit(SCALED, "domain", p), ctx)  # centred E = 0.01: inside, silent
    p["E"] = 1e-4 * np.exp(-6.0)  # centred E at its lower bound
    with pytest.warns(dl.FitWarning, match=r"'E' = 2\.479e-07 ended at its lower bound 0\.0001 \(a bound on its centred"):
        check_bounds(LawFit(SCALED, "domain", p), ctx)


def test_monotone_law_is_silent():
    from dcpt_law.laws import ADDITIVE

    p = dict(E=1.5, A=30.0, alpha=0.3, B=200.0, beta=0.3, C=0.3, gamma=0.5, eps=0.05)
    N, D, r = _grid()
    df = pd.DataFrame({"domain": "x", "model_size": N, "tokens": D, "domain_ratio": r,
                       "domain_loss": ADDITIVE.predict(p, N, D, r), "general_loss": ADDITIVE.predict(p, N, D, 1 - r)})
    with warnings.catch_warnings():
        warnings.simplefilter("error", dl.FitWarning)
        f = dl.fit(df, law="additive", target="domain")
    assert dl.monotonicity(f["domain"]) == {"r": 0.0, "D": 0.0}


def test_start_refits_from_a_fit_without_its_global_search():
    """fit(start=f) begins at f's parameters (one start, not the grid): the same optimum, with bootstrap
    intervals added in seconds. A start of another law or domain is refused by name."""
    table = synthetic_table(4)
    f = dl.fit(table, warn=False)
    again = dl.fit(table, bootstrap=12, start=f, warn=False)
    for t in ("domain", "general"):
        assert again[t].n_starts == 1 and f[t].n_starts > 1
        # the same optimum: its objective (to 1e-9), so its parameters up to the flat directions of the ratio term,
        # which a re-polish moves by ~3e-6 (numpy 2.4.6 / scipy 1.17.1; 1e-6 held before)
        assert again[t].objective == pytest.approx(f[t].objective, rel=1e-9)
        np.testing.assert_allclose(list(again[t].params.values()), list(f[t].params.values()), rtol=1e-5)
        assert again[t].bootstrap.shape == (12, 9)
        assert not np.allclose(again[t].bootstrap, again[t].bootstrap[0])  # resamples, not copies of the start
    assert dl.predict_ratio(1.6e6, 3e7, fit=again, warn=False).interval is not None
    with pytest.raises(ValueError, match="start: its domain-loss law is 'dcpt', not 'total-data'"):
        dl.fit(table, law="total-data", start=f, warn=False)
    with pytest.raises(ValueError, match="start: the given fit has no general-loss law"):
        dl.fit(table, start=dl.Fit({"domain": f["domain"]}), warn=False)
    with pytest.raises(ValueError, match="start: give a Fit"):
        dl.fit(table, start=f["domain"].params, warn=False)


def test_bootstrap_is_stratified_by_ratio():
    from dcpt_law.fitting import stratified_run_counts

    ratios = np.repeat([0.0, 0.0, 0.0, 0.5, 0.5, 1.0], 8)  # 6 runs x 8 rows; 3 at r=0, 2 at 0.5, 1 at 1
    groups = np.repeat(np.arange(6), 8)
    counts = stratified_run_counts(groups, ratios, 500, np.random.default_rng(0))
    assert counts.shape == (500, 6)
    np.testing.assert_array_equal(counts[:, :3].sum(1), 3)   # every resample keeps three r=0 runs
    np.testing.assert_array_equal(counts[:, 3:5].sum(1), 2)
    np.testing.assert_array_equal(counts[:, 5], 1)
    assert counts[:, 0].std() > 0  # and it does resample


def test_power_sum_law_with_a_second_ratio_offset():
    """Users' power-sum laws may shift r by any log-parametrised offset: r+eps2 beside r+eps."""
    from dcpt_law.laws import DCPT, Term

    eps2 = dl.Param("eps2", 1e-6, 10.0, (0.01, 0.3), log=True)
    law = dl.register_law("test-eps2", terms=[
        Term("E"), Term("A", (("alpha", "N", -1),)), Term("B", (("eta", "r+eps2", 1), ("beta", "D", -1))),
        Term("C", (("gamma", "r+eps", -1),))], params=list(DCPT.params) + [eps2], overwrite=True)
    p = dict(E=1.5, A=30.0, alpha=0.3, B=50.0, beta=0.3, eta=0.4, C=0.5, gamma=0.6, eps=0.05, eps2=0.2)
    N, D, r = 1e6, 1e7, np.array([0.0, 0.3, 1.0])
    want = 1.5 + 30 / N ** 0.3 + 50 * (r + 0.2) ** 0.4 / D ** 0.3 + 0.5 / (r + 0.05) ** 0.6
    np.testing.assert_allclose(law.predict(p, N, D, r), want, rtol=1e-12)
    # the analytic Jacobian of the offset agrees with finite differences
    ctx = law.prepare(np.full(3, N), np.full(3, D), r)
    theta = law.raw(np.array([[p[k] for k in law.param_names]]), ctx)
    _, J = law.log_predict(theta, ctx, jac=True)
    i = law.param_names.index("eps2")
    h = 1e-6
    up, dn = theta.copy(), theta.copy()
    up[0, i] += h
    dn[0, i] -= h
    fd = (law.log_predict(up, ctx) - law.log_predict(dn, ctx)) / (2 * h)
    np.testing.assert_allclose(J[0, i], fd[0], rtol=1e-5, atol=1e-10)
    with pytest.raises(ValueError, match="log=True"):
        dl.register_law("test-bad-offset", terms=[Term("E"), Term("C", (("gamma", "r+g", -1),))],
                        params=[dl.Param("E", 0.1, 10, (1.0,), log=True), dl.Param("C", 0.1, 10, (1.0,), log=True),
                                dl.Param("gamma", 0, 2, (0.5,)),
                                dl.Param("g", 0.0, 1.0, (0.1,))], overwrite=True)


def test_total_data_law_recovers_its_parameters_and_mixes_with_dcpt(table, monkeypatch):
    """total-data: L = E + A/N^alpha + B/(D0 + r*D)^beta + C/(r+eps)^gamma, D0 in tokens."""
    from dcpt_law.laws import TOTAL

    truth = dict(E=1.8, A=40.0, alpha=0.3, B=300.0, beta=0.35, D0=2e7, C=0.2, gamma=0.5, eps=0.05)
    df = table.copy()
    rng = np.random.default_rng(5)
    df["general_loss"] = TOTAL.predict(truth, df["model_size"], df["tokens"].clip(1), 1 - df["domain_ratio"]) * (
        1 + 0.003 * rng.standard_normal(len(df)))
    f = dl.fit(df, law={"domain": "dcpt", "general": "total-data"}, warn=False)
    assert f.law == "domain:dcpt,general:total-data"
    # "recommended" is looked up per loss when fitting (a cheap stand-in for the recommended general law here;
    # the real pair is fitted by the command-line tests)
    monkeypatch.setitem(dl.RECOMMENDED_LAW, "general", "total-data")
    assert dl.fit(table, law="recommended", target="general", warn=False).law == "total-data"
    assert f["general"].metrics["r2"] > 0.99 and f["domain"].law.name == "dcpt"
    N, D, r = _grid()
    np.testing.assert_allclose(f.predict(N, D, r, target="general"), TOTAL.predict(truth, N, D, 1 - r), rtol=0.01)
    assert f["general"].params["D0"] == pytest.approx(2e7, rel=0.3)
    with pytest.raises(ValueError, match="maps each fitted target"):
        dl.fit(df, law={"domain": "dcpt"})


def test_forgetting_law_formula_jacobian_and_recovery():
    """`forgetting` adds F*((1-r)*D)^zeta: the loss rises with the tokens of other data, vanishing at r = 1.
    Data with that rise are fitted by it far better than by the D-CPT form, which is constant in D at r = 0."""
    from dcpt_law.laws import FORGETTING as law

    rng = np.random.default_rng(0)
    N, D = rng.uniform(1e5, 1e6, 30), rng.uniform(1e4, 1e6, 30)
    r = rng.choice([0.0, 0.2, 0.5, 1.0], 30)
    truth = dict(zip(law.param_names, [1.0, 100, 0.3, 50, 0.3, 0.2, 0.5, 0.4, 0.01, 0.001, 0.5]))
    direct = (1 + 100 / N ** .3 + np.where(r > 0, 50 * r ** .2 / D ** .3, 0) + .5 / (r + .01) ** .4
              + np.where(r < 1, .001 * ((1 - r) * D) ** .5, 0))
    np.testing.assert_allclose(law.predict(truth, N, D, r), direct, rtol=1e-12)
    assert_jacobian_matches(law, truth, N, D, r)
    # a grid whose r = 0 loss rises with D
    Ng, Dg, rg = (a.ravel() for a in np.meshgrid([1e5, 3e5, 1e6], np.geomspace(3e4, 1e6, 6), [0, .1, .3, .6, 1.0],
                                                 indexing="ij"))
    df = pd.DataFrame({"domain": "x", "model_size": Ng, "tokens": Dg, "domain_ratio": rg, "general_loss": 3.0,
                       "domain_loss": law.predict(truth, Ng, Dg, rg) * (1 + 0.001 * rng.standard_normal(Ng.size))})
    r2 = {name: dl.fit(df, law=name, target="domain", warn=False)["domain"].metrics["r2"]
          for name in ("dcpt", "forgetting")}
    assert r2["forgetting"] > 0.999 and r2["forgetting"] > r2["dcpt"] + 0.02, r2


def test_ladder_steps_and_the_warning_for_a_size_no_better_than_the_one_below(table):
    """A clean ladder passes; when the largest size is no better than the one below it (it trained like a
    smaller model), the fit says its size term rests on noise."""
    from dcpt_law.diagnostics import ladder_steps
    from dcpt_law.table import law_inputs

    rows = table[table["tokens"] > 0]
    steps = ladder_steps(law_inputs(rows, "domain"))
    assert len(steps) == len(SIZES) - 1 and (steps["better_share"] == 1).all() and (steps["median_gain_pct"] > 0).all()
    clean = dl.fit(rows, target="domain", warn=False)["domain"]
    assert not any("not ordered" in d for d in clean.diagnostics)
    # the largest size gets the losses of the size below it, times 1.001: never better
    top, below = rows["model_size"] == SIZES[-1], rows["model_size"] == SIZES[-2]
    flat = rows.copy()
    flat.loc[top, "domain_loss"] = rows.loc[below, "domain_loss"].to_numpy() * 1.001
    steps = ladder_steps(law_inputs(flat, "domain"))
    assert steps["better_share"].iloc[-1] == 0 and steps["median_gain_pct"].iloc[-1] == pytest.approx(-0.1, abs=1e-6)
    with pytest.warns(dl.FitWarning, match=r"6.4M model has a lower loss than the 1.6M model at only 0%.*not ordered by "
                                          r"size.*This is the top step"):
        dl.fit(flat, target="domain")
    # a flat bottom step warns too, but not as the step a prediction for a larger model extends
    from dcpt_law.diagnostics import check_ladder
    from small_runs.validate import ladder_warned

    low, above = rows["model_size"] == SIZES[0], rows["model_size"] == SIZES[1]
    flat_low = rows.copy()
    flat_low.loc[above, "domain_loss"] = rows.loc[low, "domain_loss"].to_numpy() * 1.001
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_ladder(dl.LawFit(DCPT, "domain", TRUE_DOMAIN, domain="code"), law_inputs(flat_low, "domain"))
    (msg,) = [str(w.message) for w in caught]
    assert "400K model has a lower loss than the 100K model at only 0%" in msg and "top step" not in msg
    # validate's headline counts the top step only (its sizes ordered by their base models' general loss)
    base = table[table["tokens"] == 0]
    assert ladder_warned(pd.concat([base, flat])) and not ladder_warned(pd.concat([base, flat_low]))
