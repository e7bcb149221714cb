"""Averaged laws: "mean(law1, law2)", the geometric mean of laws fitted each on its own."""
import numpy as np
import pytest

import dcpt_law as dl
from conftest import assert_jacobian_matches
from dcpt_law.laws import DCPT, SCALED, AveragedLaw
from test_scaled import TRUE, scaled_table

MEAN = "mean(dcpt, dcpt-scaled)"


def test_mean_law_is_parsed_by_name_and_checked():
    law = dl.get_law("mean(dcpt,dcpt-scaled)")
    assert law.name == MEAN and dl.get_law(MEAN) is law  # one canonical spelling
    assert law.param_names[:2] == ["dcpt.E", "dcpt.A"] and law.n_params == DCPT.n_params + SCALED.n_params
    assert set(law.needs) == {"N", "D", "r", "G"}
    with pytest.raises(ValueError, match="two or more different laws"):
        dl.get_law("mean(dcpt)")
    with pytest.raises(ValueError, match="two or more different laws"):
        dl.get_law("mean(dcpt, dcpt)")
    with pytest.raises(ValueError, match="unknown law 'nope'"):
        dl.get_law("mean(dcpt, nope)")


def test_mean_law_is_the_geometric_mean_of_its_members_with_their_jacobian():
    rng = np.random.default_rng(1)
    N, D, G = rng.uniform(1e4, 1e6, 20), rng.uniform(1e4, 1e6, 20), rng.uniform(4.0, 6.0, 20)
    r = rng.choice([0.0, 0.1, 0.5, 1.0], 20)
    p_dcpt = dict(E=1.6, A=25.0, alpha=0.28, B=60.0, beta=0.3, eta=0.5, C=0.6, gamma=0.5, eps=0.04)
    law = dl.get_law(MEAN)
    params = {f"dcpt.{k}": v for k, v in p_dcpt.items()} | {f"dcpt-scaled.{k}": v for k, v in TRUE.items()}
    want = np.sqrt(DCPT.predict(p_dcpt, N, D, r) * SCALED.predict(TRUE, N, D, r, G=G))
    np.testing.assert_allclose(law.predict(params, N, D, r, G=G), want, rtol=1e-12)
    assert_jacobian_matches(law, params, N, D, r, G=G)


def test_fitting_a_mean_law_fits_each_member_on_its_own(tmp_path):
    train = scaled_table((2.5e4, 5e4, 1e5), (5.7, 5.37, 5.45))
    f = dl.fit(train, law={"domain": MEAN, "general": "chinchilla"}, target="domain", bootstrap=4, warn=False)
    lf = f["domain"]
    members = {m: dl.fit(train, law=m, target="domain", bootstrap=4, warn=False)["domain"] for m in ("dcpt", "dcpt-scaled")}
    assert lf.params == {f"{m}.{k}": v for m, mf in members.items() for k, v in mf.params.items()}
    np.testing.assert_allclose(lf.bootstrap, np.concatenate([members[m].bootstrap for m in members], axis=1))
    x = dict(model_size=4e5, tokens=[3e4, 5e5], domain_ratio=[0.2, 1.0], warn=False, base_general_loss=4.97)
    want = np.sqrt(members["dcpt"].predict(**x) * members["dcpt-scaled"].predict(**x))
    np.testing.assert_allclose(lf.predict(**x), want, rtol=1e-10)
    # what a member's fit can't tell is kept with the mean, named by member
    carried = [f"{m}: {d}" for m, mf in members.items() for d in mf.diagnostics]
    assert carried and lf.diagnostics[:len(carried)] == carried
    # start=f: each member starts from its own parameters in f (one start each), and ends where it was
    again = dl.fit(train, law={"domain": MEAN, "general": "chinchilla"}, target="domain", start=f, warn=False)
    assert again["domain"].n_starts == 2
    np.testing.assert_allclose(again["domain"].predict(**x), lf.predict(**x), rtol=1e-6)
    back = dl.load_fit(f.save(tmp_path / "fit.json"))["domain"]
    np.testing.assert_allclose(back.predict(**x), lf.predict(**x), rtol=1e-12)
    assert "dcpt-scaled.kappa" in lf.report()


def test_a_mean_law_has_no_start_grid_of_its_own():
    with pytest.raises(ValueError, match="member by member"):
        AveragedLaw(["dcpt", "dcpt-scaled"]).start_grid({}, 1.0)


def test_evaluate_scores_a_mean_law_from_its_members_fitted_per_fold():
    train = scaled_table((2.5e4, 5e4, 1e5), (5.7, 5.37, 5.45))
    t = dl.evaluate(train, law=["dcpt", "dcpt-scaled", MEAN], split="model_size", target="domain")
    folds = t[~t["fold"].isin(["mean", "median"])].set_index(["law", "fold"])
    assert len(folds.loc[MEAN]) == 3  # one fold per held-out size, like its members
    # each fold's mean law is the members' fits of that fold: refit them by hand on the same fold
    fold, test = dl.folds(dl.table.fit_rows(train).reset_index(drop=True), "model_size")[-1]
    rows = dl.table.fit_rows(train).reset_index(drop=True)
    fits = {m: dl.fit(rows[~test], law=m, target="domain", warn=False)["domain"] for m in ("dcpt", "dcpt-scaled")}
    held = rows[test]
    x = dict(model_size=held["model_size"], tokens=held["tokens"], domain_ratio=held["domain_ratio"], warn=False,
             base_general_loss=held["base_general_loss"].to_numpy(float))
    pred = np.sqrt(np.asarray(fits["dcpt"].predict(**x)) * np.asarray(fits["dcpt-scaled"].predict(**x)))
    obs = held["domain_loss"].to_numpy(float)
    want = 1 - np.sum((pred - obs) ** 2) / np.sum((obs - obs.mean()) ** 2)
    assert folds.loc[(MEAN, fold), "r2"] == pytest.approx(want, abs=2e-3)
    assert folds.loc[(MEAN, fold), "r2"] != pytest.approx(folds.loc[("dcpt", fold), "r2"], abs=1e-6)
