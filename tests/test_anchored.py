"""The anchored laws: the model's size enters through G, its base model's general loss."""
import warnings

import numpy as np
import pandas as pd
import pytest

import dcpt_law as dl
from conftest import RATIOS, TOKENS
from dcpt_law.laws import ANCHORED
from dcpt_law.table import with_base_general

TRUE = dict(E=1.2, A=0.05, alpha=2.5, B=60.0, beta=0.3, eta=0.5, C=0.6, gamma=0.5, eps=0.04)
# base general loss per size; the largest size is under-trained: its G is *worse* than the size below it
BASE_G = {1e5: 5.6, 2e5: 5.3, 4e5: 5.05, 3.2e6: 5.2}


def anchored_table(sizes=(1e5, 2e5, 4e5), noise=0.003, seed=0) -> pd.DataFrame:
    N, D, r = (a.ravel() for a in np.meshgrid(sizes, TOKENS[::2], RATIOS, indexing="ij"))
    G = np.array([BASE_G[n] for n in N])
    rng = np.random.default_rng(seed)
    loss = ANCHORED.predict(TRUE, N, D, r, G=G) * (1 + noise * rng.standard_normal(N.size))
    cpt = pd.DataFrame({"domain": "code", "model_size": N, "tokens": D, "domain_ratio": r,
                        "general_loss": 5.0, "domain_loss": loss, "seed": 0})
    base = pd.DataFrame({"domain": "code", "model_size": list(sizes), "tokens": 0.0, "domain_ratio": 0.0,
                         "general_loss": [BASE_G[n] for n in sizes], "domain_loss": 9.0, "seed": 0})
    return pd.concat([base, cpt], ignore_index=True)


@pytest.fixture(scope="module")
def anchored_fit():
    return dl.fit(anchored_table(), law="dcpt-anchored", target="domain", warn=False)


def test_with_base_general_looks_up_the_base_row_of_the_same_size_and_seed():
    df = pd.DataFrame({"domain": "code", "model_size": [1e5, 1e5, 1e5, 1e5, 2e5], "tokens": [0, 0, 10, 10, 10],
                       "domain_ratio": 0.5, "general_loss": [5.0, 6.0, 4.0, 4.5, 4.2], "domain_loss": 3.0,
                       "seed": [0, 1, 0, 1, 0]})
    out = with_base_general(df)
    assert out["base_general_loss"].tolist()[2:4] == [5.0, 6.0]  # each seed's own base model
    assert np.isnan(out["base_general_loss"].iloc[4])  # no base row for 2e5: unknown, not guessed
    given = df.assign(base_general_loss=[np.nan, np.nan, np.nan, np.nan, 4.9])
    assert with_base_general(given)["base_general_loss"].iloc[4] == 4.9  # a user's own column is kept


def test_anchored_law_predicts_an_under_trained_larger_model_from_its_base_loss(anchored_fit):
    """N-based laws can only predict a bigger model to be better; the anchored law follows G."""
    held = anchored_table(sizes=(3.2e6,), noise=0.0)
    held = held[held["tokens"] > 0]
    pred = anchored_fit["domain"].predict(held["model_size"], held["tokens"], held["domain_ratio"],
                                          base_general_loss=BASE_G[3.2e6])
    assert dl.metrics(pred, held["domain_loss"])["mape"] < 0.5
    # and the same model with a better base model is predicted better, by the law's own size term
    better = anchored_fit["domain"].predict(3.2e6, 1e7, 0.5, base_general_loss=4.9)
    assert better < anchored_fit["domain"].predict(3.2e6, 1e7, 0.5, base_general_loss=5.2)


def test_anchored_fit_knows_G_at_fitted_sizes_and_asks_for_it_elsewhere(anchored_fit, tmp_path):
    lf = anchored_fit["domain"]
    assert lf.anchored and not dl.fit(anchored_table(), target="domain", warn=False)["domain"].anchored
    at_known = lf.predict(2e5, 1e7, 0.5)  # G from the table's base row
    assert at_known == pytest.approx(float(lf.predict(2e5, 1e7, 0.5, base_general_loss=5.3)))
    with pytest.raises(ValueError, match="base_general_loss"):
        lf.predict(3.2e6, 1e7, 0.5)
    with pytest.raises(ValueError, match="base_general_loss"):
        lf.predict(3.2e6, 1e7, 0.5, base_general_loss=-1.0)
    back = dl.load_fit(anchored_fit.save(tmp_path / "a.json"))
    assert back["domain"].base_general == lf.base_general
    assert float(back["domain"].predict(2e5, 1e7, 0.5)) == pytest.approx(float(at_known))


def test_anchored_law_warns_when_the_base_loss_is_far_outside_the_fitted_ones(anchored_fit):
    """G carries the size: a base model far better than any fitted one is an extrapolation, whatever N says."""
    lf = anchored_fit["domain"]
    lo, hi = min(lf.base_general.values()), max(lf.base_general.values())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lf.predict(4e5, 1e7, 0.5, base_general_loss=lo - 0.5 * (hi - lo))  # a little beyond: silent
    with pytest.warns(dl.ExtrapolationWarning, match=r"G = 2 nats is far outside the base losses of the fitted sizes"):
        lf.predict(4e5, 1e7, 0.5, base_general_loss=2.0)


def test_anchored_law_without_base_rows_says_which_sizes_lack_them():
    table = anchored_table()
    table = table[~((table["tokens"] == 0) & (table["model_size"] == 2e5))]
    with pytest.raises(ValueError, match=r"no base row \(tokens = 0\) for model_size 200K"):
        dl.fit(table, law="dcpt-anchored", target="domain", warn=False)


def test_uses_pass_the_base_loss_to_anchored_laws(anchored_fit):
    both = dl.fit(anchored_table(), law={"domain": "dcpt-anchored", "general": "dcpt"}, warn=False)
    res = dl.predict_ratio(3.2e6, 1e7, fit=both, tolerance=0.05, base_general_loss=5.2, warn=False)
    assert res.domain_loss == pytest.approx(float(both["domain"].predict(3.2e6, 1e7, res.ratio, base_general_loss=5.2)))
    lim = dl.optimal_ratio_limited_domain(3.2e6, 2e6, fit=both, base_general_loss=5.2, warn=False)
    assert lim.domain_loss == pytest.approx(float(both["domain"].predict(3.2e6, lim.tokens, lim.ratio,
                                                                         base_general_loss=5.2, warn=False)))
    with pytest.raises(ValueError, match="varies the model size"):
        dl.allocate_compute(1e18, 0.5, fit=both)


def test_evaluate_scores_anchored_laws_on_a_held_out_size():
    ev = dl.evaluate(anchored_table(sizes=tuple(BASE_G)), law=["dcpt-anchored", "dcpt"], split="model_size",
                     target="domain")
    last = ev[ev["fold"] == "N=3200000"].set_index("law")["r2"]  # the under-trained largest size, held out
    assert last["dcpt-anchored"] > 0.95 and last["dcpt"] < last["dcpt-anchored"]


def test_evaluate_skips_an_anchored_law_without_base_rows_and_says_so():
    table = anchored_table()
    with pytest.warns(UserWarning, match="'dcpt-anchored' skipped.*no base row"):
        ev = dl.evaluate(table[table["tokens"] > 0], law=["dcpt", "dcpt-anchored"], split="all", target="domain")
    assert set(ev["law"]) == {"dcpt"}
