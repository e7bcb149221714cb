"""Probe-calibrated cross-domain law: synthetic recovery, a held-out domain from its probe alone, the API."""
import copy

import numpy as np
import pandas as pd
import pytest

import dcpt_law as dl
from dcpt_law.laws import DCPT
from dcpt_law.transfer import probe_rows
from conftest import RATIOS

SIZES = np.array([1e5, 4e5, 1.6e6])
TOKENS = np.geomspace(1e6, 1e8, 6)
# shared exponents per loss; each domain its own E, B, C (domain loss: also beta), general loss: its own C
SHAPE = {"domain": {"A": 40.0, "alpha": 0.35, "eta": 0.3, "gamma": 0.5, "eps": 0.02},
         "general": {"E": 1.6, "A": 30.0, "alpha": 0.3, "B": 60.0, "beta": 0.25, "eta": 0.4, "gamma": 0.3, "eps": 0.05}}
OWN = {"a": (1.5, 200.0, 0.30, 0.20, 0.02), "b": (2.5, 90.0, 0.25, 0.50, 0.05), "c": (0.8, 900.0, 0.40, 0.08, 0.01),
       "d": (3.0, 40.0, 0.20, 0.30, 0.03), "e": (2.0, 300.0, 0.33, 0.15, 0.04)}  # E, B, beta, C; C of the general


def params(dom, A=None):
    E, B, beta, C, Cg = OWN[dom]
    own_A = {} if A is None else {"A": A}  # a domain whose loss scales otherwise with N
    return {"domain": {**SHAPE["domain"], "E": E, "B": B, "beta": beta, "C": C, **own_A},
            "general": {**SHAPE["general"], "C": Cg}}


def synthetic(domains, noise=0.002, seed=0, A=None):
    """Full grids plus each domain's base rows (tokens == 0; the domain loss there is the r_d = 0 law)."""
    rng = np.random.default_rng(seed)
    N, D, r = (a.ravel() for a in np.meshgrid(SIZES, TOKENS, RATIOS, indexing="ij"))
    frames = []
    for dom in domains:
        p = params(dom, A)
        row = {"domain": dom, "model_size": N, "tokens": D, "domain_ratio": r, "seed": 0,
               "domain_loss": DCPT.predict(p["domain"], N, D, r) * (1 + noise * rng.standard_normal(N.size)),
               "general_loss": DCPT.predict(p["general"], N, D, 1 - r) * (1 + noise * rng.standard_normal(N.size))}
        base = {"domain": dom, "model_size": SIZES, "tokens": 0.0, "domain_ratio": 0.0, "seed": 0,
                "domain_loss": DCPT.predict(p["domain"], SIZES, 1e6, 0.0), "general_loss": 4.0}
        frames += [pd.DataFrame(base), pd.DataFrame(row)]
    return pd.concat(frames, ignore_index=True)


def test_held_out_domain_from_its_probe_alone(tmp_path):
    """Fit on four domains; the fifth's whole grid follows from its smallest size's base row and r_d = 1 run."""
    cf = dl.fit_cross_domain(synthetic(list("abcd")), method="calibrated", probe_tokens=TOKENS[3])
    for t in ("domain", "general"):
        assert cf.metrics[t]["r2"] > 0.99, t
    assert cf.exponents["domain"]["alpha"] == pytest.approx(0.35, abs=0.05)
    new = synthetic(["e"], noise=0.0)
    probe = probe_rows(new, "e", TOKENS[3], n_sizes=1)  # a domain of the fitted ones' size scaling: one size is enough
    assert len(probe) == 1 + 4 and probe["model_size"].nunique() == 1  # base row + 4 logged losses
    cf.add_domain("e", probe)
    grid = new[new["tokens"] > 0]
    for t in ("domain", "general"):
        pred = cf.predict("e", grid["model_size"], grid["tokens"], grid["domain_ratio"], target=t)
        assert np.max(np.abs(pred / grid[f"{t}_loss"] - 1)) < 0.03, t
    # a calibrated fit is a fit for every usage, and survives save / load
    res = dl.predict_ratio(4e5, 3e7, fit=cf, domain="e")
    cf.save(tmp_path / "cal.json")
    again = dl.load_fit(tmp_path / "cal.json")
    assert type(again).__name__ == "CalibratedFit"
    assert dl.predict_ratio(4e5, 3e7, fit=again, domain="e").ratio == pytest.approx(res.ratio)
    with pytest.raises(ValueError, match="probe"):
        cf.for_domain("unknown")


def test_two_size_probe_sees_a_domain_that_scales_otherwise_with_size():
    """A new domain that gains far less from size than the fitted ones: a probe at the smallest size calibrates it
    there and misses the larger sizes; a probe at the two smallest also fits its own A, and the grid follows."""
    cf = dl.fit_cross_domain(synthetic(list("abcd")), method="calibrated", probe_tokens=TOKENS[3])
    new = synthetic(["e"], noise=0.0, A=4.0)
    grid = new[new["tokens"] > 0]
    worst = {}
    for n in (1, 2):
        c = copy.deepcopy(cf)
        probe = probe_rows(new, "e", TOKENS[3], n_sizes=n)
        assert probe["model_size"].nunique() == n
        c.add_domain("e", probe)
        pred = c.predict("e", grid["model_size"], grid["tokens"], grid["domain_ratio"])
        worst[n] = np.max(np.abs(pred / grid["domain_loss"] - 1))
    assert worst[2] < 0.02 < 0.1 < worst[1], worst
    with pytest.raises(ValueError, match="needs 4 model sizes in the table, found 3"):
        probe_rows(new, "e", TOKENS[3], n_sizes=4)
    with pytest.raises(ValueError, match="one size; use method='calibrated'"):
        dl.leave_one_domain_out(synthetic(list("ab")), method="paper", probe_sizes=2)


def test_leave_one_domain_out_calibrated_follows_domains_of_different_shape():
    """Domains that differ in shape: the paper's level-only form cannot follow them, the calibrated law can."""
    df = synthetic(list("abcd"))
    cal = dl.leave_one_domain_out(df, method="calibrated", probe_tokens=TOKENS[3])
    assert set(cal["domain"]) == set("abcd") and (cal["method"] == "calibrated").all()
    dom = cal[cal["target"] == "domain"]
    assert dom["r2_cross"].min() > 0.97
    assert (cal["probe_compute_share"] < 0.05).all()


def test_leave_domains_out_of_one_fit():
    """fit_on: one fit on the named domains; only the others are held out, each on that fit alone (the second is
    calibrated on a copy, so it scores as it would alone)."""
    df = synthetic(list("abcde"))
    both = dl.leave_one_domain_out(df, method="calibrated", probe_tokens=TOKENS[3], fit_on=list("abc"), in_domain=False)
    assert sorted(set(both["domain"])) == ["d", "e"] and len(both) == 4
    alone = dl.leave_one_domain_out(df[df["domain"] != "d"], method="calibrated", probe_tokens=TOKENS[3],
                                    fit_on=list("abc"), in_domain=False)
    key = ["domain", "target"]
    pd.testing.assert_frame_equal(both[both["domain"] == "e"].set_index(key)[["r2_cross", "mape_cross"]],
                                  alone.set_index(key)[["r2_cross", "mape_cross"]])
    assert both.loc[both["target"] == "domain", "r2_cross"].min() > 0.97
    with pytest.raises(ValueError, match=r"\['x'\] not in the table"):
        dl.leave_one_domain_out(df, fit_on=["a", "x"])
    with pytest.raises(ValueError, match=r"fit_on=\[\]: name the domains"):
        dl.leave_one_domain_out(df, fit_on=[])
    with pytest.raises(ValueError, match="leaves no domain"):
        dl.leave_one_domain_out(df, fit_on=list("abcde"))
    with pytest.raises(ValueError, match=r"\['abc'\] not in the table"):  # a string is one domain's name
        dl.leave_one_domain_out(df, fit_on="abc")


def test_probe_needs_a_base_row_and_a_run():
    df = synthetic(["a"])
    with pytest.raises(ValueError, match="tokens == 0"):
        probe_rows(df[df["tokens"] > 0], "a", TOKENS[3])
    with pytest.raises(ValueError, match="method"):
        dl.fit_cross_domain(synthetic(["a", "b"]), method="magic")


def test_cli_calibrated_fit_and_predict(tmp_path, capsys):
    import json

    from dcpt_law import cli

    synthetic(list("abc")).to_csv(tmp_path / "multi.csv", index=False)
    out = tmp_path / "cal.json"
    assert cli.main(["fit", str(tmp_path / "multi.csv"), "--cross-domain", "--method", "calibrated",
                     "--probe-tokens", str(int(TOKENS[3])), "--out", str(out)]) == 0
    assert "probe-calibrated" in capsys.readouterr().out
    assert cli.main(["predict", str(out), "--domain", "b", "--model-size", "400K", "--tokens", "30M", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    want = dl.predict_ratio(4e5, 3e7, fit=dl.load_fit(out), domain="b", warn=False)
    assert got["ratio"]["ratio"] == pytest.approx(want.ratio)
    # a new domain from its probe's table (two sizes), as add_domain would calibrate it
    new = synthetic(["e"], noise=0.0, A=4.0)
    probe_rows(new, "e", TOKENS[3]).to_csv(tmp_path / "probe.csv", index=False)
    args = ["predict", str(out), "--domain", "e", "--model-size", "1.6M", "--tokens", "30M", "--json"]
    assert cli.main([*args, "--probe", str(tmp_path / "probe.csv")]) == 0
    got = json.loads(capsys.readouterr().out)
    cf = dl.load_fit(out)
    cf.add_domain("e", probe_rows(new, "e", TOKENS[3]))
    assert got["ratio"]["ratio"] == pytest.approx(dl.predict_ratio(1.6e6, 3e7, fit=cf, domain="e", warn=False).ratio)
    assert cli.main(args) == 2 and "run its probe" in capsys.readouterr().err      # without --probe: not calibrated


def test_calibrated_is_the_default_and_rejects_paper_coefficients():
    df = synthetic(["a", "b"])
    assert type(dl.fit_cross_domain(df, probe_tokens=TOKENS[3])).__name__ == "CalibratedFit"
    with pytest.raises(ValueError, match="method='paper'"):
        dl.fit_cross_domain(df, coefficients={"a": dl.DomainCoefficient(2.0, 0.1)})
