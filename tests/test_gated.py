"""The gated laws: the size and data terms switch on with the corpus (r^eta), so r = 0 is flat in N and D."""
import numpy as np
import pandas as pd
import pytest

import dcpt_law as dl
from conftest import assert_jacobian_matches
from dcpt_law.laws import GATED, GATED_ANCHORED

TRUE = dict(E=1.0, A=300.0, alpha=0.5, B=80.0, beta=0.35, eta=0.05, C=0.5, gamma=0.6, eps=0.01)


@pytest.mark.parametrize("law", [GATED, GATED_ANCHORED])
def test_gated_formula_and_jacobian(law):
    rng = np.random.default_rng(0)
    N, D, G = rng.uniform(1e4, 1e6, 30), rng.uniform(1e4, 1e6, 30), rng.uniform(4.0, 6.0, 30)
    r = rng.choice([0.0, 0.1, 0.5, 1.0], 30)
    params = dict(TRUE, A=0.01, alpha=2.0) if law is GATED_ANCHORED else TRUE
    size = 0.01 * G ** 2.0 if law is GATED_ANCHORED else 300 / N ** .5
    direct = 1 + np.where(r > 0, r ** .05 * (size + 80 / D ** .35), 0) + .5 / (r + .01) ** .6
    np.testing.assert_allclose(law.predict(params, N, D, r, G=G), direct, rtol=1e-12)
    assert_jacobian_matches(law, params, N, D, r, G=G)


def gated_table(sizes, noise=0.002, seed=0) -> pd.DataFrame:
    """Domain loss whose r = 0 level is the same at every size (the corpus was never seen), as in our runs."""
    N, D, r = (a.ravel() for a in np.meshgrid(sizes, np.geomspace(3e4, 5e5, 6), [0, .1, .2, .5, .8, 1.0],
                                              indexing="ij"))
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"domain": "x", "model_size": N, "tokens": D, "domain_ratio": r, "general_loss": 3.0,
                         "domain_loss": GATED.predict(TRUE, N, D, r) * (1 + noise * rng.standard_normal(N.size))})


def test_gated_law_extrapolates_in_size_where_dcpt_cannot_fit_a_flat_r0_level():
    """The D-CPT Law's size term is shared by r = 0, so a size-independent r = 0 level bends its size
    effect; the gated law predicts a 4x larger model at every ratio, r = 0 included."""
    train = gated_table((2.5e4, 5e4, 1e5))
    held = gated_table((4e5,), noise=0.0)
    errs = {}
    for name in ("dcpt", "dcpt-gated"):
        lf = dl.fit(train, law=name, target="domain", warn=False)["domain"]
        pred = lf.predict(held["model_size"], held["tokens"], held["domain_ratio"], warn=False)
        errs[name] = dl.metrics(pred, held["domain_loss"])["mape"]
        if name == "dcpt-gated":  # r = 0: one level, whatever N and D
            at0 = lf.predict([1e4, 1e6, 1e6], [3e4, 3e4, 1e6], 0.0, warn=False)
            assert np.ptp(at0) == pytest.approx(0.0, abs=1e-12)
    assert errs["dcpt-gated"] < 0.5 and errs["dcpt-gated"] < errs["dcpt"] / 2, errs


def test_gated_laws_are_evaluated_by_default():
    assert {"dcpt-gated", "dcpt-gated-anchored"} <= set(dl.laws.RATIO_LAWS)
