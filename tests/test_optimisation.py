import re
import warnings

import numpy as np
import pytest

import dcpt_law as dl
from dcpt_law.laws import DCPT
from conftest import TRUE_DOMAIN, TRUE_GENERAL


@pytest.fixture(scope="module")
def truth(fitted):
    return dl.Fit({"domain": dl.LawFit(DCPT, "domain", TRUE_DOMAIN),
                   "general": dl.LawFit(DCPT, "general", TRUE_GENERAL)}, base=fitted.base_losses)


def _brute(truth, N, D, T, L_g0):
    r = np.linspace(0, 1, 1_000_001)
    ld = truth["domain"].predict(N, D, r, warn=False)
    lg = truth["general"].predict(N, D, r, warn=False)
    ok = lg <= L_g0 * (1 + T)
    return r[ok][np.argmin(ld[ok])]


@pytest.mark.parametrize("N,D,T", [(4e5, 3e7, 0.03), (4e5, 3e7, 0.01), (1.6e6, 3e7, 0.01), (6.4e6, 1e8, 0.03),
                                   (1.6e6, 1e8, 0.02)])
def test_predict_ratio_is_exact(truth, N, D, T):
    """Against a 1e-6 brute-force scan: the constrained optimum to 1e-4, binding or not."""
    res = dl.predict_ratio(N, D, fit=truth, tolerance=T)
    want = _brute(truth, N, D, T, res.base_general_loss)
    assert abs(res.ratio - want) < 1e-4
    assert res.general_loss <= res.base_general_loss * (1 + T) * (1 + 1e-9)
    if res.constraint_active:
        assert np.isclose(res.general_loss, res.base_general_loss * (1 + T), rtol=1e-7)
    assert float(res) == res.ratio
    assert "r_d=" in repr(res)


def test_binding_and_free_cases(truth):
    free = dl.predict_ratio(4e5, 3e7, fit=truth, tolerance=0.5)
    tight = dl.predict_ratio(4e5, 3e7, fit=truth, tolerance=0.01)
    assert not free.constraint_active and tight.constraint_active
    assert tight.ratio < free.ratio


def test_infeasible_tolerance_warns(truth):
    with pytest.warns(UserWarning, match="no domain ratio keeps.*least increase any ratio reaches is"):
        res = dl.predict_ratio(4e5, 3e7, fit=truth, tolerance=0.0, base_general_loss=1.0)
    assert not res.feasible
    # the smallest tolerance any ratio meets is reported, and it is the frontier's first row
    front = dl.ratio_frontier(4e5, 3e7, fit=truth, base_general_loss=1.0)
    assert res.least_increase == pytest.approx(front["general_loss_increase"].iloc[0], rel=1e-6)
    assert f"{res.least_increase:+.2%}" in repr(res) and "ratio_frontier" in repr(res)
    assert np.isnan(dl.predict_ratio(4e5, 3e7, fit=truth, tolerance=0.5, warn=False).least_increase)


@pytest.mark.parametrize("N,D", [(4e5, 3e7), (1.6e6, 1e8)])
def test_ratio_frontier_answers_every_tolerance(truth, N, D):
    """The frontier is a Pareto front (increase rising, domain loss falling), and at each tolerance its last row
    within it is predict_ratio's answer, to the scan's step."""
    front = dl.ratio_frontier(N, D, fit=truth)
    assert len(front) > 10 and list(front.columns) == ["ratio", "domain_loss", "general_loss", "general_loss_increase"]
    assert (np.diff(front["general_loss_increase"]) >= 0).all() and (np.diff(front["domain_loss"]) < 0).all()
    G = dl.predict_ratio(N, D, fit=truth, warn=False).base_general_loss
    assert np.allclose(front["general_loss_increase"], front["general_loss"] / G - 1)
    lo, hi = front["general_loss_increase"].iloc[[0, -1]]
    for T in np.linspace(max(lo, 0.0), hi, 7)[1:-1]:  # predict_ratio takes T >= 0; the front may start below 0
        res = dl.predict_ratio(N, D, fit=truth, tolerance=T, warn=False)
        row = front[front["general_loss_increase"] <= T].iloc[-1]
        assert abs(row["ratio"] - res.ratio) <= 1.5 / (2001 - 1)
        assert row["domain_loss"] >= res.domain_loss - 1e-9  # the exact solver is never worse than the scan
    with pytest.raises(ValueError, match="points"):
        dl.ratio_frontier(N, D, fit=truth, points=1)


def test_base_loss_sources(truth):
    res = dl.predict_ratio(4e5, 3e7, fit=truth, base_general_loss=3.5)
    assert res.base_general_loss == 3.5
    with pytest.raises(ValueError, match="base_general_loss"):
        dl.predict_ratio(2e5, 3e7, fit=truth)  # no tokens=0 row for this size
    # a size written as users write it ("401K" for 4e5 parameters) finds its base row
    assert dl.predict_ratio("401K", 3e7, fit=truth).base_general_loss == truth.base_losses.loc[4e5, "general_loss"]
    with pytest.raises(ValueError, match="tolerance"):
        dl.predict_ratio(4e5, 3e7, fit=truth, tolerance=-1)
    # a size that is no size is named as such, not as a size without a base row
    for usage in (dl.predict_ratio, dl.ratio_frontier):
        with pytest.raises(ValueError, match=r"model_size=-5.0 must be > 0"):
            usage(-5, 3e7, fit=truth, base_general_loss=3.5)


def test_predict_names_the_arguments_whose_shapes_do_not_broadcast(truth):
    with pytest.raises(ValueError, match=r"model_size, tokens and domain_ratio have shapes \(2,\), \(3,\)"):
        truth.predict([4e5, 8e5], [1e6, 2e6, 3e6], 0.5)
    with pytest.raises(ValueError, match=r"shapes \(2,\), \(3,\)"):
        truth["domain"].predict([4e5, 8e5], [1e6, 2e6, 3e6], 0.5)


def test_use_fit_default(tmp_path, fitted):
    import dcpt_law.optimisation as opt

    opt._CURRENT = None
    with pytest.raises(ValueError, match="use_fit"):
        dl.predict_ratio(4e5, 3e7)
    fitted.save(tmp_path / "f.json")
    dl.use_fit(tmp_path / "f.json")
    assert dl.predict_ratio("400K", "30M").ratio == dl.predict_ratio(4e5, 3e7, fit=fitted).ratio
    opt._CURRENT = None


def test_limited_domain_data(truth):
    """Usage 2 against a brute-force scan of L_d(N, Dd / r, r)."""
    N, Dd = 4e5, 5e6
    res = dl.optimal_ratio_limited_domain(N, Dd, fit=truth)
    r = np.linspace(1e-3, 1, 200_001)
    want = r[np.argmin(truth["domain"].predict(N, Dd / r, r, warn=False))]
    assert abs(res.ratio - want) < 1e-4
    assert np.isclose(res.tokens, Dd / res.ratio)


def test_limited_domain_data_warns_where_its_answer_trains_and_when_min_ratio_sets_it(truth):
    """The extrapolation check looks at the answer's D = Dd / r_d, not at Dd; a capped answer says so."""
    lf = dl.LawFit(DCPT, "domain", TRUE_DOMAIN, ranges={"model_size": (1e5, 1e6), "tokens": (2e3, 3e4)})
    f = dl.Fit({"domain": lf, "general": truth["general"]}, base=truth.base_losses)
    N, Dd = 4e5, 1e5  # Dd 3.3x past the fitted tokens; the answer (r_d ~0.24) trains ~14x past them
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an answer inside the budget: no min_ratio warning
        free = dl.optimal_ratio_limited_domain(N, Dd, fit=dl.Fit({"domain": truth["domain"], "general": truth["general"]},
                                                                  base=truth.base_losses))
    assert 0.1 < free.ratio < 0.5 and free.tokens > 10 * 3e4
    with pytest.warns(dl.ExtrapolationWarning) as seen:
        dl.optimal_ratio_limited_domain(N, Dd, fit=f)
    said = " | ".join(str(w.message) for w in seen)
    assert re.search(r"tokens .* more than 10x outside", said) and "14x the largest fitted D" in said, said
    # any answer past the fitted D says so, with how far (usage 2's answers there were the least reliable)
    with pytest.warns(dl.ExtrapolationWarning, match=r"usage 2: the answer r_d = .* trains D = .*x the largest "
                                                     r"fitted D \(30K\)"):
        dl.optimal_ratio_limited_domain(N, 5e3, fit=f)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inside = dl.optimal_ratio_limited_domain(N, 5e3, fit=dl.Fit({"domain": dl.LawFit(
            DCPT, "domain", TRUE_DOMAIN, ranges={"model_size": (1e5, 1e6), "tokens": (2e3, 1e6)}),
            "general": truth["general"]}, base=truth.base_losses))
    assert inside.tokens < 1e6
    with pytest.warns(dl.FitWarning, match="min_ratio"):
        capped = dl.optimal_ratio_limited_domain(N, Dd, fit=truth, min_ratio=0.5)
    assert capped.ratio == pytest.approx(0.5, abs=1e-6)


def test_allocate_compute(truth):
    """Usage 3 against a brute-force scan over log N at C = 6 N D."""
    C = 1e17
    res = dl.allocate_compute(C, 0.5, fit=truth)
    logn = np.linspace(np.log(1e5), np.log(C / 6), 400_001)
    N = np.exp(logn)
    want = N[np.argmin(truth["domain"].predict(N, C / (6 * N), 0.5, warn=False))]
    assert abs(np.log(res.model_size / want)) < 1e-3
    assert np.isclose(6 * res.model_size * res.tokens, C)
    # a law with no interior optimum in the searched sizes says so instead of returning the edge silently
    with pytest.warns(UserWarning, match="no interior optimum"):
        dl.allocate_compute(C, 0.5, fit=truth, n_range=(1e3, 1e4))


def test_infeasible_resamples_are_counted_not_mixed_in(truth):
    """A bootstrap resample with no feasible ratio is reported as a share, not as r = 0 in the interval."""
    N, D = 4e5, 3e7
    base = dl.predict_ratio(N, D, fit=truth, tolerance=0.03)
    names = DCPT.param_names
    good_d = np.array([[TRUE_DOMAIN[k] for k in names]] * 4)
    good_g = np.array([[TRUE_GENERAL[k] for k in names]] * 4)
    good_g[3, names.index("E")] += 5.0  # this resample's general loss is far above L_g0 everywhere
    f = dl.Fit({"domain": dl.LawFit(DCPT, "domain", TRUE_DOMAIN, bootstrap=good_d),
                "general": dl.LawFit(DCPT, "general", TRUE_GENERAL, bootstrap=good_g)}, base=truth.base_losses)
    res = dl.predict_ratio(N, D, fit=f, tolerance=0.03)
    assert res.infeasible_share == pytest.approx(0.25)
    assert res.interval[0] == pytest.approx(base.ratio) and res.interval[1] == pytest.approx(base.ratio)
    assert "infeasible in 25% of bootstrap resamples" in repr(res)


def test_warns_when_the_law_is_not_monotone_next_to_the_answer(truth):
    """TRUE_GENERAL has eta > 0: at r_g = 0 (r_d = 1) its B-term vanishes and the general loss drops.
    A recommendation at r_d = 1 sits on that artefact and must say so; one far from it stays quiet."""
    with pytest.warns(dl.FitWarning, match="general loss falls with r_d .* not monotone where it is used"):
        res = dl.predict_ratio(4e5, 3e7, fit=truth, tolerance=0.99)
    assert res.ratio == pytest.approx(1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", dl.FitWarning)
        res = dl.predict_ratio(4e5, 3e7, fit=truth, tolerance=0.03)
    assert 0.1 < res.ratio < 0.9


def test_every_usage_1_route_reads_the_tolerance_as_a_share_and_names_the_slip(truth):
    """3 for 3% is refused with the fix, the same way by the law, the crossings and the cells; 0.5 is a tolerance."""
    from test_crossings import crossing_table, line
    table = crossing_table(line(1.2, -0.04, [1e4, 3e4, 1e5]))
    cells = dl.cell_scaling(table, warn=False)
    G = float(table.loc[(table["tokens"] == 0) & (table["model_size"] == 1e5), "general_loss"].iloc[0])
    routes = {"law": lambda t: dl.predict_ratio(4e5, 3e7, fit=truth, tolerance=t, warn=False),
              "crossings": lambda t: dl.crossing_scaling(table, tolerance=t),
              "cells": lambda t: cells.predict_ratio(1e5, G, t, warn=False)}
    for name, route in routes.items():
        with pytest.raises(ValueError, match=r"tolerance=3: .* share in \[0, 1\): give 0.03 for 3%$"):
            route(3)
        for bad in (-0.01, 1.0, float("nan"), "3%"):
            with pytest.raises(ValueError, match=r"tolerance=.*share in \[0, 1\): give 0\.0"):
                route(bad)
        assert route(0.5) is not None, name
