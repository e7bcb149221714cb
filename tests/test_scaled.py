"""The scaled laws: the base model's general loss G multiplies what the model learns (the recommended pair)."""
import re
import warnings

import numpy as np
import pandas as pd
import pytest

import dcpt_law as dl
from conftest import assert_jacobian_matches
from dcpt_law.laws import (SCALED, TOTAL_SCALED, TOTAL_SCALED_FORGETTING, TOTAL_SCALED_GAIN, TOTAL_SCALED_GATED,
                           TOTAL_SCALED_REWARM)

TRUE = dict(E=0.8, kappa=1.0, B=8.0, beta=0.3, eta=0.05, C=0.3, gamma=0.6, eps=0.01)


@pytest.mark.parametrize("law", [SCALED, TOTAL_SCALED, TOTAL_SCALED_GATED, TOTAL_SCALED_GAIN])
def test_scaled_formula_and_jacobian(law):
    rng = np.random.default_rng(0)
    N, D, G = rng.uniform(1e4, 1e6, 30), rng.uniform(1e4, 1e6, 30), rng.uniform(4.0, 6.0, 30)
    r = rng.choice([0.0, 0.1, 0.5, 1.0], 30)
    level = 0.8
    if law is SCALED:
        params = TRUE
        learned = np.where(r > 0, 8 * r ** .05 / D ** .3, 0)
    else:
        params = {k: v for k, v in TRUE.items() if k != "eta"} | {"D0": 2e4}
        learned = 8 / (2e4 + r * D) ** .3
        if law in (TOTAL_SCALED_GATED, TOTAL_SCALED_GAIN):  # the base model's level, gated by exposure: 0 at r = 0
            params, level = params | {"eta": 0.05}, np.where(r > 0, 0.8 * r ** .05, 0)
        if law is TOTAL_SCALED_GAIN:  # each CPT token counts G^-nu times
            params, learned = params | {"nu": 3.0}, 8 / (2e4 + G ** -3.0 * r * D) ** .3
    direct = G ** 1.0 * (level + learned) + .3 / (r + .01) ** .6
    np.testing.assert_allclose(law.predict(params, N, D, r, G=G), direct, rtol=1e-12)
    assert_jacobian_matches(law, params, N, D, r, G=G)


def ladder_table(law, params, target, sizes, G, ratios, noise=0.002, seed=0) -> pd.DataFrame:
    """Losses of ``target`` from ``law`` at ``params``, each size with its base model's general loss G (tokens = 0
    rows); the law sees r = r_d for the domain loss and r_g = 1 - r_d for the general loss. The other loss
    column is filler."""
    rows = []
    rng = np.random.default_rng(seed)
    for n, g in zip(sizes, G):
        D, rd = (a.ravel() for a in np.meshgrid(np.geomspace(3e4, 5e5, 6), ratios, indexing="ij"))
        L = law.predict(params, n, D, rd if target == "domain" else 1 - rd, G=g)
        L = L * (1 + noise * rng.standard_normal(D.size))
        other = {"general_loss": g * 0.9} if target == "domain" else {"domain_loss": 3.0}
        rows.append(pd.DataFrame({"domain": "x", "model_size": n, "tokens": D, "domain_ratio": rd,
                                  f"{target}_loss": L, **other}))
        rows.append(pd.DataFrame({"domain": "x", "model_size": [n], "tokens": [0.0], "domain_ratio": [0.0],
                                  "general_loss": [g], "domain_loss": [9.0]}))
    return pd.concat(rows, ignore_index=True)


def scaled_table(sizes, G, noise=0.002, seed=0) -> pd.DataFrame:
    """Domain losses from dcpt-scaled."""
    return ladder_table(SCALED, TRUE, "domain", sizes, G, [0, .1, .2, .5, .8, 1.0], noise, seed)


def heldout_mape(train, held, laws, target, G) -> dict[str, float]:
    """MAPE (%) of each law fitted on ``train`` at the rows of ``held``, given its base model's general loss G."""
    errs = {}
    for name in laws:
        lf = dl.fit(train, law=name, target=target, warn=False)[target]
        pred = lf.predict(held["model_size"], held["tokens"], held["domain_ratio"], warn=False,
                          base_general_loss=np.full(len(held), G))
        errs[name] = dl.metrics(pred, held[f"{target}_loss"])["mape"]
    return errs


def test_scaled_law_extrapolates_where_an_additive_base_term_cannot():
    """Base models whose G is out of order in N (an unlucky seed at the top of the ladder, as on our runs):
    the scaled law carries G through every (D, r) and predicts a 4x larger model; dcpt-anchored, whose
    A*G^alpha only shifts the curve, misses by more than twice as much."""
    train = scaled_table((2.5e4, 5e4, 1e5), (5.7, 5.37, 5.45))
    held = scaled_table((4e5,), (4.97,), noise=0.0)
    held = held[held["tokens"] > 0]
    errs = heldout_mape(train, held, ("dcpt-anchored", "dcpt-scaled"), "domain", 4.97)
    assert errs["dcpt-scaled"] < 0.5 and errs["dcpt-scaled"] < errs["dcpt-anchored"] / 2, errs


def test_scaled_laws_are_evaluated_by_default():
    assert {"dcpt-scaled", "total-data-scaled", "total-data-scaled-gated", "total-data-scaled-gain"} <= set(
        dl.laws.RATIO_LAWS)


GATED_TRUE = dict(E=0.9, kappa=1.0, B=30.0, beta=0.3, D0=1e6, C=0.5, gamma=0.3, eps=1e-4, eta=0.02)


def general_table(sizes, G, noise=0.002, seed=0) -> pd.DataFrame:
    """General losses from total-data-scaled-gated: domain-only CPT (r_d = 1) forgets the base model, and its
    loss is the same at every size, as on our runs."""
    return ladder_table(TOTAL_SCALED_GATED, GATED_TRUE, "general", sizes, G, [0, .2, .5, .8, .9, 1.0], noise, seed)


def test_gated_general_law_predicts_forgetting_that_ignores_size():
    """Domain-only CPT (r_g = 0) ends at one general loss whatever the size: the gated law carries that level to
    a 4x larger model, while total-data-scaled, whose level moves with G, under-predicts it there."""
    train = general_table((2.5e4, 5e4, 1e5), (5.7, 5.37, 5.45))
    held = general_table((4e5,), (4.97,), noise=0.0)
    held = held[(held["tokens"] > 0) & (held["domain_ratio"] == 1.0)]
    errs = heldout_mape(train, held, ("total-data-scaled", "total-data-scaled-gated"), "general", 4.97)
    assert errs["total-data-scaled-gated"] < min(1.0, errs["total-data-scaled"] / 4), errs


def test_gain_law_predicts_that_a_better_base_model_gains_more_from_cpt_tokens():
    """General losses where a better base model (lower G) gains more from each general CPT token, as on our runs:
    fitted on 3 sizes, the gain law predicts a 4x larger model at the largest D and low r_d (where usage 1 asks
    it); the gated law, whose curve in D has one shape at every size, misses by several times more there."""
    # tokens count G^-nu times (G in nats): at G = 5.2, D0 and B give the gated law's GATED_TRUE curve
    true = GATED_TRUE | dict(nu=6.0, D0=3e4 * 5.2 ** -6, B=30.0 * 5.2 ** (-6 * 0.3))
    ratios = [0, .2, .5, .8, .9, 1.0]
    train = ladder_table(TOTAL_SCALED_GAIN, true, "general", (2.5e4, 5e4, 1e5), (5.7, 5.45, 5.2), ratios)
    held = ladder_table(TOTAL_SCALED_GAIN, true, "general", (4e5,), (4.8,), ratios, noise=0.0)
    held = held[(held["tokens"] == held["tokens"].max()) & (held["domain_ratio"] <= 0.5)]
    errs = heldout_mape(train, held, ("total-data-scaled-gated", "total-data-scaled-gain"), "general", 4.8)
    assert errs["total-data-scaled-gain"] < min(0.5, errs["total-data-scaled-gated"] / 3), errs


def test_scaled_token_feature_is_checked_when_a_law_is_registered():
    """rD*G^-nu+D0: the scale needs an exponent parameter (not log), the offset a log parameter."""
    from dcpt_law.laws import Term

    E, B = dl.Param("E", 0.1, 10, (1.0,), log=True), dl.Param("B", 0.1, 1e3, (1.0,), log=True)
    beta, D0 = dl.Param("beta", 0, 2, (0.3,)), dl.Param("D0", 1.0, 1e9, (1.0,), log=True)
    nu = dl.Param("nu", 0, 10, (1.0,))
    law = dl.register_law("test-gain", terms=[Term("E"), Term("B", (("beta", "rD*N^nu+D0", -1),))],
                          params=[E, B, beta, D0, nu], overwrite=True)
    assert law.needs == ("N", "D", "r")  # N scales the tokens
    N, D, r = np.array([1e4, 1e5]), np.array([1e5, 3e5]), np.array([0.5, 1.0])
    p = dict(E=1.0, B=50.0, beta=0.3, D0=1e4, nu=0.2)
    np.testing.assert_allclose(law.predict(p, N, D, r), 1 + 50 / (1e4 + N ** 0.2 * r * D) ** 0.3, rtol=1e-12)
    assert_jacobian_matches(law, p, N, D, r)
    with pytest.raises(ValueError, match="log=False"):  # the exponent is fitted in log space: a mistake
        dl.register_law("test-gain-bad", terms=[Term("E"), Term("B", (("beta", "rD*G^-D0+D0", -1),))],
                        params=[E, B, beta, D0], overwrite=True)
    with pytest.raises(ValueError, match="N\\^<exponent> or G"):
        dl.register_law("test-gain-bad", terms=[Term("E"), Term("B", (("beta", "rD*K^nu+D0", -1),))],
                        params=[E, B, beta, D0, nu], overwrite=True)


FORGETTING_TRUE = GATED_TRUE | dict(E=0.5, F=3e5, lam=3.0, zeta=1.0, rho=2.0, Dr=2e4)


def test_forgetting_formula_and_jacobian():
    rng = np.random.default_rng(1)
    N, D, G = rng.uniform(1e4, 1e6, 40), rng.uniform(1e4, 1e6, 40), rng.uniform(4.0, 6.0, 40)
    r = rng.choice([0.0, 0.1, 0.5, 0.9, 1.0], 40)
    p = FORGETTING_TRUE
    gated = TOTAL_SCALED_GATED.predict({k: p[k] for k in GATED_TRUE}, N, D, r, G=G)
    hump = 3e5 * G ** -3.0 * ((1 - r) * D) ** 1.0 / (2e4 + r * D) ** 2.0  # 0 at r = 1: no other data
    np.testing.assert_allclose(TOTAL_SCALED_FORGETTING.predict(p, N, D, r, G=G), gated + hump, rtol=1e-12)
    assert_jacobian_matches(TOTAL_SCALED_FORGETTING, p, N, D, r, G=G)


def test_forgetting_law_predicts_the_hump_that_replay_recovers():
    """General losses with a forgetting hump: at r_g = 0.1-0.2 the loss first rises with the other data and then
    falls back as replayed general tokens accumulate, more for a better base model (as on our runs, where the
    peak rise at r_d = 0.9 grows from 4% at 27K to 11% at 443K parameters). Fitted on 3 sizes, the forgetting law
    predicts the hump of a 4x larger model; the gated law, with no such term, misses it several times more."""
    ratios = [0, .2, .5, .8, .9, 1.0]
    train = ladder_table(TOTAL_SCALED_FORGETTING, FORGETTING_TRUE, "general", (2.5e4, 5e4, 1e5), (5.7, 5.37, 5.2),
                         ratios)
    held = ladder_table(TOTAL_SCALED_FORGETTING, FORGETTING_TRUE, "general", (4e5,), (4.97,), ratios, noise=0.0)
    held = held[(held["tokens"] > 0) & held["domain_ratio"].between(0.75, 0.95)]
    errs = heldout_mape(train, held, ("total-data-scaled-gated", "total-data-scaled-forgetting"), "general", 4.97)
    assert errs["total-data-scaled-forgetting"] < min(0.5, errs["total-data-scaled-gated"] / 3), errs


def test_a_vanishing_level_term_does_not_call_the_shared_exponent_unidentified():
    """E -> 0 in dcpt-scaled: E is unidentified, but kappa is still fitted through the data term (the pilot's
    case); the warning must name E alone."""
    import copy
    import warnings

    from dcpt_law.diagnostics import check_negligible_terms
    from dcpt_law.table import law_inputs, with_base_general

    train = scaled_table((2.5e4, 5e4, 1e5), (5.7, 5.37, 5.45))
    lf = dl.fit(train, law="dcpt-scaled", target="domain", warn=False)["domain"]
    lf0 = copy.copy(lf)
    lf0.params = dict(lf.params, E=1e-9)  # the E-term vanishes; kappa still scales the live data term
    X = law_inputs(with_base_general(train)[lambda d: d["tokens"] > 0], "domain")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_negligible_terms(lf0, X)
    said = [str(w.message) for w in caught if "not identified" in str(w.message)]
    assert len(said) == 1 and "parameters (E)" in said[0] and "kappa" not in said[0], said


REWARM_TRUE = GATED_TRUE | dict(nu=3.0, F=0.2, lam=4.0, zeta=2.0, Dw=8e4)


def test_rewarm_formula_and_jacobian():
    """The gain law plus a step F*G^-lam*(D/(Dw + D))^zeta at every mixture, 0 before CPT; "D+Dw" is a shifted
    token feature like "rD+D0"."""
    rng = np.random.default_rng(2)
    N, D, G = rng.uniform(1e4, 1e6, 40), rng.uniform(1e4, 1e6, 40), rng.uniform(4.0, 6.0, 40)
    r = rng.choice([0.0, 0.1, 0.5, 0.9, 1.0], 40)
    p = REWARM_TRUE
    gain = TOTAL_SCALED_GAIN.predict({k: p[k] for k in TOTAL_SCALED_GAIN.param_names}, N, D, r, G=G)
    step = 0.2 * G ** -4.0 * (D / (8e4 + D)) ** 2.0
    np.testing.assert_allclose(TOTAL_SCALED_REWARM.predict(p, N, D, r, G=G), gain + step, rtol=1e-12)
    assert_jacobian_matches(TOTAL_SCALED_REWARM, p, N, D, r, G=G)
    assert TOTAL_SCALED_REWARM.needs == ("D", "r", "G")  # G carries the size: no N


_D0_LADDER = 3e5 * 5.2 ** -3  # tokens weighted by G^-nu: 3e5 at G = 5.2
# re-warming as on our 5M-token bases: the gain law plus a step of 0.25 nats at G = 5.2, 0.40 at G = 4.8 (L/G at
# r_d = 0 rises 1.6% by D = 5e5 at G = 5.2, 3.8% at 4.8)
REWARM_LADDER = dict(E=0.85, kappa=1.0, B=0.08 * _D0_LADDER ** 0.5, beta=0.5, D0=_D0_LADDER, C=0.1, gamma=0.3,
                     eps=1e-3, eta=0.02, nu=3.0, F=0.25 * 5.2 ** 6, lam=6.0, zeta=2.0, Dw=4e4)


def test_rewarm_law_predicts_the_rise_of_re_warming_a_larger_model():
    """General losses of CPT that re-warms the learning rate of annealed base models, as on our 5M-token bases: at
    every mixture the loss first rises (the lost cool-down, more for a better base model: at r_d = 0 +1.7% at 27K to
    +5.7% at 443K parameters) and then falls as the model learns. Fitted on 3 sizes, the rewarm law predicts a 4x
    larger model at r_d <= 0.5; the gain law, whose curve in D only falls, misses it several times more."""
    true = REWARM_LADDER
    ratios = [0, .2, .5, .8, .9, 1.0]
    train = ladder_table(TOTAL_SCALED_REWARM, true, "general", (2.5e4, 5e4, 1e5), (5.7, 5.45, 5.2), ratios)
    held = ladder_table(TOTAL_SCALED_REWARM, true, "general", (4e5,), (4.8,), ratios, noise=0.0)
    held = held[(held["tokens"] > 0) & (held["domain_ratio"] <= 0.5)]
    errs = heldout_mape(train, held, ("total-data-scaled-gain", "total-data-scaled-rewarm"), "general", 4.8)
    assert errs["total-data-scaled-rewarm"] < min(0.5, errs["total-data-scaled-gain"] / 3), errs


def test_a_law_with_a_prescreen_is_fitted_from_the_best_points_of_its_grid(monkeypatch):
    """total-data-scaled-rewarm (prescreen=256): Levenberg-Marquardt polishes the 256 points of its 11664-point start
    grid with the lowest objective, not every point. It contains the gain law (F -> 0); on a ladder with a real
    step it fits far better than the gain law."""
    from dcpt_law import fitting
    from dcpt_law.search import objective
    from dcpt_law.table import fit_rows, law_inputs, load_losses

    train = ladder_table(TOTAL_SCALED_REWARM, REWARM_LADDER, "general", (2.5e4, 5e4, 1e5), (5.7, 5.45, 5.2), [0, .5, .9, 1.0])
    seen = []
    real = fitting.lm_search
    monkeypatch.setattr(fitting, "lm_search", lambda law, ctx, logy, theta0, **kw: seen.append(theta0.copy()) or
                        real(law, ctx, logy, theta0, **kw))
    rew = dl.fit(train, law="total-data-scaled-rewarm", target="general", warn=False)["general"]
    (starts,) = seen
    X = law_inputs(fit_rows(load_losses(train), "x"), "general")
    ctx, logy = fitting.law_context(TOTAL_SCALED_REWARM, X), np.log(X["loss"])
    grid = fitting.start_points(TOTAL_SCALED_REWARM, ctx, float(np.median(X["loss"])))
    assert len(grid) == 11664 and len(starts) == rew.n_starts == 256
    every = np.sort(objective(TOTAL_SCALED_REWARM, grid, ctx, logy, 1.0, 1e-3))
    kept = np.sort(objective(TOTAL_SCALED_REWARM, starts, ctx, logy, 1.0, 1e-3))
    np.testing.assert_array_equal(kept, every[:256])
    gain_fit = dl.fit(train, law="total-data-scaled-gain", target="general", warn=False)["general"]
    assert gain_fit.n_starts == 11664  # a law without a prescreen polishes its whole grid
    assert rew.objective < 0.5 * gain_fit.objective
    with pytest.raises(ValueError, match="prescreen"):
        type(TOTAL_SCALED_REWARM)("x", "", TOTAL_SCALED_REWARM.terms, TOTAL_SCALED_REWARM.params, prescreen=0)


def test_a_g_based_law_fitted_across_pre_training_budgets_warns():
    train = scaled_table((2.5e4, 5e4, 1e5), (5.7, 5.5, 5.3)).assign(base_tokens=1e6)
    with pytest.warns(dl.FitWarning, match="pre-trained on 2 token counts"):
        dl.fit(train.assign(base_tokens=np.where(train["model_size"] == 1e5, 5e6, 1e6)), law="dcpt-scaled",
               target="domain")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        dl.fit(train, law="dcpt-scaled", target="domain")
    assert not [w for w in seen if "pre-trained on" in str(w.message)]


def test_a_target_base_off_the_fitted_sizes_trend_in_n_warns():
    """G = 6 N^-0.05 on the fitted sizes; a 4x larger target on that trend is quiet, one whose base was pre-trained
    longer (20% lower G) or shorter (15% higher) warns."""
    sizes = np.array([2.5e4, 5e4, 1e5])
    lf = dl.LawFit(SCALED, "domain", TRUE, ranges={"model_size": (2.5e4, 1e5), "tokens": (3e4, 5e5)},
                   base_general=dict(zip(sizes, 6 * sizes ** -0.05)))
    on_trend = 6 * 4e5 ** -0.05
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lf.predict(4e5, 1e5, 0.5, base_general_loss=on_trend * 1.05)
    for G, sign in ((on_trend * 0.8, "-20%"), (on_trend * 1.15, "+15%")):
        with pytest.warns(dl.ExtrapolationWarning, match=re.escape(f"G lies {sign} off the trend")):
            lf.predict(4e5, 1e5, 0.5, base_general_loss=G)
