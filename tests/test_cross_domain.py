"""Cross-domain D-CPT Law: recovery on synthetic domains, held-out domains from K alone, the API."""
import json

import numpy as np
import pandas as pd
import pytest

import dcpt_law as dl
from dcpt_law.cross_domain import CrossDomainLaw, DomainCoefficient, probe_compute_share
from dcpt_law.laws import DCPT
from conftest import RATIOS, TRUE_DOMAIN, TRUE_GENERAL

SIZES = np.array([1e5, 4e5, 1.6e6])
TOKENS = np.geomspace(1e6, 1e8, 5)
SHARED = {"F": 0.8, "mu": 1.2, "w2": 4.0}
COEFS = {d: DomainCoefficient(k1, k2) for d, k1, k2 in
         [("a", 2.0, 0.10), ("b", 3.0, 0.25), ("c", 4.5, 0.05), ("d", 6.0, 0.30), ("e", 2.6, 0.40), ("f", 5.0, 0.15)]}


def synthetic(domains, noise=0.003, seed=0):
    law = CrossDomainLaw("k1+k2")
    rng = np.random.default_rng(seed)
    N, D, r = (a.ravel() for a in np.meshgrid(SIZES, TOKENS, RATIOS, indexing="ij"))
    frames = []
    for dom in domains:
        c = COEFS[dom]
        row = {"domain": dom, "model_size": N, "tokens": D, "domain_ratio": r, "seed": 0}
        for t, truth, rr in (("domain", TRUE_DOMAIN, r), ("general", TRUE_GENERAL, 1 - r)):
            p = {**truth, **SHARED}
            E = p["E"] + p["F"] / law.K(p, c) ** p["mu"]
            row[f"{t}_loss"] = DCPT.predict({**truth, "E": E}, N, D, rr) * (1 + noise * rng.standard_normal(N.size))
        frames.append(pd.DataFrame(row))
    return pd.concat(frames, ignore_index=True)


def test_joint_fit_recovers_every_domain():
    doms = list("abcdef")
    cf = dl.fit_cross_domain(synthetic(doms), method="paper", coefficients=COEFS)
    for t in ("domain", "general"):
        assert cf.metrics[t]["r2"] > 0.99
    clean = synthetic(doms, noise=0.0)
    for dom in doms:
        g = clean[clean["domain"] == dom]
        pred = cf.predict(dom, g["model_size"], g["tokens"], g["domain_ratio"])
        assert np.max(np.abs(pred / g["domain_loss"] - 1)) < 0.01, dom


def test_held_out_domain_from_its_coefficient_alone():
    """Fit on five domains; the sixth's whole grid follows from its (k1, k2)."""
    cf = dl.fit_cross_domain(synthetic(list("abcde")), method="paper", coefficients=COEFS)
    cf.add_domain("f", COEFS["f"])
    g = synthetic(["f"], noise=0.0)
    pred = cf.predict("f", g["model_size"], g["tokens"], g["domain_ratio"])
    assert np.max(np.abs(pred / g["domain_loss"] - 1)) < 0.02
    with pytest.raises(ValueError, match="probe"):
        cf.for_domain("unknown")


def test_predict_ratio_on_a_cross_domain_fit(tmp_path):
    cf = dl.fit_cross_domain(synthetic(list("abcd")), method="paper", coefficients=COEFS)
    base = pd.DataFrame({"general_loss": [4.2], "domain_loss": [5.0]}, index=pd.Index([4e5], name="model_size"))
    cf.add_domain("new", COEFS["e"], base)
    res = dl.predict_ratio(4e5, 3e7, fit=cf, domain="new")
    assert res.base_general_loss == 4.2 and 0 <= res.ratio <= 1
    with pytest.raises(ValueError, match="domain="):
        dl.predict_ratio(4e5, 3e7, fit=cf)
    cf.save(tmp_path / "cross.json")
    again = dl.CrossDomainFit.load(tmp_path / "cross.json")
    assert dl.predict_ratio(4e5, 3e7, fit=again, domain="new").ratio == pytest.approx(res.ratio)


def test_domain_coefficient_and_probe_measurement():
    c = dl.domain_coefficient(8.0, [7.5, 7.0, 6.0])
    assert c.k1 == 8.0 and c.k2 == pytest.approx(0.25)
    with pytest.raises(ValueError, match="finite"):
        dl.domain_coefficient(float("nan"), 1.0)
    # measured from a table: base rows give k1, the smallest size's r_d = 1 run at the probe gives k2
    df = synthetic(["a", "b"])
    base = df[df["tokens"] == TOKENS[0]].drop_duplicates(["domain", "model_size"]).assign(tokens=0, domain_ratio=0.0)
    base["domain_loss"] = 9.0
    table = pd.concat([base, df], ignore_index=True)
    coefs = dl.cross_domain.measure_coefficients(table, probe_tokens=TOKENS[1] * 0.9)
    run = table[(table.domain == "a") & (table.model_size == SIZES[0]) & (table.domain_ratio == 1.0)
                & (table.tokens == TOKENS[1])]
    assert coefs["a"].k1 == 9.0 and coefs["a"].k2 == pytest.approx((9.0 - run["domain_loss"].iloc[0]) / 9.0)
    assert coefs["a"].probe_tokens == TOKENS[1]
    share = probe_compute_share(table, "a", TOKENS[1])
    # one run of TOKENS[1] at the smallest size against 3 sizes x 9 ratios at TOKENS[-1]
    assert share == pytest.approx(SIZES[0] * TOKENS[1] / (len(RATIOS) * SIZES.sum() * TOKENS[-1]))


def test_bits_per_byte_unit_needs_the_columns():
    with pytest.raises(ValueError, match="bytes_per_token"):
        dl.fit_cross_domain(synthetic(["a", "b"]), unit="bpb", method="paper", coefficients=COEFS)


def test_one_model_size_cannot_fit_the_size_exponent():
    df = synthetic(["a", "b"])
    with pytest.raises(ValueError, match="model_size"):
        dl.fit_cross_domain(df[df["model_size"] == SIZES[0]], method="paper", coefficients=COEFS)


def test_cli_cross_domain_fit_and_predict(tmp_path, capsys):
    from dcpt_law import cli

    df = synthetic(list("abcd"))
    # base rows and probe points so k1, k2 are measured from the table itself
    base = df[df["tokens"] == TOKENS[0]].drop_duplicates(["domain", "model_size"]).assign(tokens=0, domain_ratio=0.0)
    pd.concat([base, df], ignore_index=True).to_csv(tmp_path / "multi.csv", index=False)
    out = tmp_path / "cross.json"
    assert cli.main(["fit", str(tmp_path / "multi.csv"), "--cross-domain", "--method", "paper",
                     "--probe-tokens", str(int(TOKENS[1])),
                     "--out", str(out)]) == 0
    assert "Cross-domain fit" in capsys.readouterr().out
    assert cli.main(["predict", str(out), "--domain", "b", "--model-size", "400K", "--tokens", "30M", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    want = dl.predict_ratio(4e5, 3e7, fit=dl.load_fit(out), domain="b", warn=False)
    assert got["ratio"]["ratio"] == pytest.approx(want.ratio)
    assert cli.main(["predict", str(out), "--model-size", "400K", "--tokens", "30M"]) == 2
    assert "needs --domain" in capsys.readouterr().err


@pytest.mark.parametrize("kdef", ["k1+k2", "k1", "k2"])
def test_cross_domain_jacobian_matches_finite_differences(kdef):
    law = CrossDomainLaw(kdef)
    rng = np.random.default_rng(0)
    n = 40
    ctx = law.prepare(rng.uniform(1e5, 1e7, n), rng.uniform(1e6, 1e8, n), rng.choice(RATIOS, n),
                      k1=rng.uniform(2, 6, n), k2=rng.uniform(0.05, 0.4, n))
    values = {**TRUE_DOMAIN, **SHARED}
    theta = law.raw(np.array([[values[k] for k in law.param_names]]), ctx)
    _, J = law.log_predict(theta, ctx, jac=True)
    for i in range(theta.shape[1]):
        up, dn = theta.copy(), theta.copy()
        up[0, i] += 1e-6
        dn[0, i] -= 1e-6
        fd = (law.log_predict(up, ctx) - law.log_predict(dn, ctx)) / 2e-6
        np.testing.assert_allclose(J[0, i], fd[0], rtol=1e-4, atol=1e-8, err_msg=law.param_names[i])
