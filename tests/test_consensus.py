"""dcpt_law.consensus: usage 1 by the law, the crossings, the cells and the relative cells, and their median."""
import warnings

import numpy as np
import pytest

import dcpt_law as dl
from dcpt_law.consensus import AGREE, ROUTES
from test_cells import G, table


@pytest.fixture(scope="module")
def sweep():
    """Three swept sizes of the cells' test surface (each cell its own power of G), 11 ratios, one domain."""
    df = table({n: G[n] for n in list(G)[:3]}, ratios=np.linspace(0, 1, 11))
    return df


@pytest.fixture(scope="module")
def law_fit(sweep):
    return dl.fit(sweep, law="dcpt", warn=False)


def test_every_route_answers_and_the_consensus_is_their_median(sweep, law_fit):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = dl.usage1_consensus(law_fit, sweep, 480_000, 200_000, 0.03, base_general_loss=4.8, warn=False)
        law = dl.predict_ratio(480_000, 200_000, fit=law_fit, base_general_loss=4.8, warn=False)
        crossing = dl.crossing_scaling(sweep, tokens=200_000).predict(480_000, warn=False)
        cells = dl.cell_scaling(sweep, warn=False).predict_ratio(200_000, 4.8, warn=False)
        rel = dl.cell_scaling(sweep, x="model_size", relative=True, warn=False).predict_ratio(
            200_000, 4.8, model_size=480_000, warn=False)
    a = c.answers.set_index("route")
    assert tuple(a.index) == ROUTES
    want = [law.ratio, crossing.ratio, cells.ratio, rel.ratio]
    np.testing.assert_allclose(a["ratio"], want, rtol=1e-9)
    assert float(c) == pytest.approx(np.median(want)) and c.spread == pytest.approx(max(want) - min(want))
    # the law route's whole answer travels with it (the report reads its losses instead of solving again)
    assert c.law.ratio == pytest.approx(law.ratio) and c.law.domain_loss == pytest.approx(law.domain_loss)
    assert a.loc["crossings", "lo"] == pytest.approx(crossing.interval[0])  # intervals where a route has one
    assert np.isnan(a.loc["cells", "lo"])
    # the cells recover this surface at the larger size: its crossing is the cells' one, and near the median
    assert abs(float(c) - cells.ratio) < 0.05
    assert "median of 4 routes" in repr(c) and "relative cells" in repr(c)


def test_a_route_that_cannot_answer_says_why_and_the_rest_decide(sweep, law_fit):
    two = sweep[sweep["model_size"] > 30_000]  # two sizes: no crossings line, no cells
    with pytest.warns(dl.FitWarning, match="only the law answered"):
        c = dl.usage1_consensus(law_fit, two, 480_000, 200_000, base_general_loss=4.8)
    a = c.answers.set_index("route")
    assert a["ratio"].notna().sum() == 1 and float(c) == a.loc["law", "ratio"] and not c.agree
    assert a.loc["cells", "note"].startswith("no answer: ") and "3" in a.loc["cells", "note"]
    assert "no answer" in repr(c) and "median of 1 route r_d" in repr(c)
    assert "unchecked: no other route answered" in repr(c) and "DISAGREE" not in repr(c)  # one answer: nothing to compare


def test_disagreement_warns(sweep, law_fit, monkeypatch):
    import dcpt_law.consensus as consensus

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = dl.usage1_consensus(law_fit, sweep, 480_000, 200_000, base_general_loss=4.8, warn=False)
    monkeypatch.setattr(consensus, "AGREE", c.spread / 2)  # the same answers against a stricter threshold
    with pytest.warns(dl.FitWarning, match="spread over"):
        dl.usage1_consensus(law_fit, sweep, 480_000, 200_000, base_general_loss=4.8)
    assert AGREE == 0.05


def test_bad_input_names_the_field(sweep, law_fit):
    with pytest.raises(ValueError, match="base_general_loss"):
        dl.usage1_consensus(law_fit, sweep, 480_000, 200_000)  # a size the sweep did not train
    with pytest.raises(ValueError, match="model_size"):
        dl.usage1_consensus(law_fit, sweep, "big", 200_000, base_general_loss=4.8)
