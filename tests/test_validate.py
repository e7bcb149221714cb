"""small_runs.validate: the held-out-size section on data from a known law (no torch needed)."""
import pandas as pd

from conftest import SIZES, synthetic_table
from small_runs import validate


def test_heldout_section_recovers_a_known_law(monkeypatch):
    monkeypatch.setattr(validate, "CANDIDATES", ["dcpt", {"domain": "dcpt", "general": "total-data"}])
    df = synthetic_table(2)
    df["size_name"] = df["model_size"].map(dict(zip(SIZES, ["a", "b", "c", "d"])))
    small, held = df[df["model_size"] < SIZES[-1]], df[df["model_size"] == SIZES[-1]]
    assert validate.complete_domains(small) == ["code"]
    text = "\n".join(validate.heldout_section(small, held, None))
    table = [line for line in text.splitlines() if line.startswith("| code | dcpt |")]
    r2 = {row.split("|")[3].strip(): float(row.split("|")[6]) for row in table[:2]}
    assert r2["domain"] > 0.98 and r2["general"] > 0.98, text
    at_dmax = [float(row.split("|")[9]) for row in table[:2]]  # MAPE at the largest token count
    assert all(0 <= m < 1 for m in at_dmax), text
    rec = [line for line in text.splitlines() if line.startswith("| code | dcpt | 0.")]
    assert rec, text
    regret = float(rec[0].split("|")[6])
    assert abs(regret) < 0.5, text
    assert abs(float(rec[0].split("|")[7])) < 0.5, text  # regret on the isotonic curves
    assert "| code | domain:dcpt,general:total-data | 0." in text  # the pair's recommendation is scored too


def test_md_table():
    out = validate.md(pd.DataFrame({"a": [1.23456, 2.0], "b": ["x", "y"]}))
    assert out.splitlines() == ["| a | b |", "| --- | --- |", "| 1.235 | x |", "| 2 | y |"]


def test_plan_extra_brackets_the_prediction(tmp_path, monkeypatch):
    import tomllib

    df = synthetic_table(2)
    df["size_name"] = df["model_size"].map(dict(zip(SIZES, ["a", "b", "c", "d"])))
    small, held = df[df["model_size"] < SIZES[-1]], df[df["model_size"] == SIZES[-1]]
    (tmp_path / "small_runs" / "configs").mkdir(parents=True)
    (tmp_path / "small_runs" / "configs" / "multidomain.toml").write_text(
        (validate.ROOT / "small_runs" / "configs" / "multidomain.toml").read_text())
    monkeypatch.setattr(validate, "ROOT", tmp_path)
    # the same pair twice: its second pair of ratios repeats the first, so it is not planned again
    (path,) = validate.plan_extra(small, held, laws=[validate.PAIRS[0]] * 2, label="d4x")
    cfg = tomllib.loads(path.read_text())
    predicted = float(path.read_text().split("predicts r_d = ")[1].split()[0].rstrip(";"))
    assert cfg["domains"] == ["code"] and cfg["sizes"] == ["d"] and len(cfg["ratios"]) == 2
    assert path.name == "heldout_extra_d4x_code.toml" and cfg["out"] == "small_runs/results/heldout_extra"
    lo, hi = cfg["ratios"]
    assert lo < predicted < hi and hi - lo < 0.07


def test_experiment_keeps_seed_0_or_every_seed_of_repeated_domains():
    rows = [(dom, size, seed) for dom in ("code", "law") for size in ("a", "b", "c") for seed in (0, 1)
            if seed == 0 or (dom == "code" and size != "c")]
    df = pd.DataFrame(rows, columns=["domain", "size_name", "seed"]).assign(tokens=10)
    small, held = validate.experiment(df, ("a", "b"), "c")
    assert set(small["seed"]) == {0} and len(small) == 4 and len(held) == 2
    small, held = validate.experiment(df, ("a", "b"), "c", all_seeds=True)
    assert set(small["domain"]) == {"code"} and len(small) == 4 and held["domain"].tolist() == ["code"]


def test_regret_on_seed_means_pools_the_repeats(monkeypatch):
    """A lucky seed-0 run at the best ratio makes the raw regret; its repeats (seeds 1, 2 above it) pool it away."""
    import numpy as np

    monkeypatch.setattr(validate, "CANDIDATES", ["dcpt"])
    df = synthetic_table(2, noise=0.0)
    df["size_name"] = df["model_size"].map(dict(zip(SIZES, ["a", "b", "c", "d"])))
    small, held = df[df["model_size"] < SIZES[-1]], df[df["model_size"] == SIZES[-1]].copy()

    def usage_row(text):
        lines = [ln for ln in text.splitlines() if ln.startswith("| code | dcpt | 0.")]
        header = next(ln for ln in text.splitlines() if ln.startswith("| domain | law | predicted"))
        return dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in lines[0].split("|")]))

    clean = usage_row("\n".join(validate.heldout_section(small, held, None)))
    assert "regret % (seed means)" not in clean  # no repeats: no column
    best = float(clean["best trained r_d"])
    lucky = (held["tokens"] == held["tokens"].max()) & np.isclose(held["domain_ratio"], best)
    held.loc[lucky, "domain_loss"] *= 0.97  # seed 0 got lucky at the best feasible ratio
    repeats = pd.concat([held[lucky].assign(seed=s, domain_loss=held.loc[lucky, "domain_loss"] / 0.97 * 1.015)
                         for s in (1, 2)] + [held[held["tokens"] == 0].assign(seed=s) for s in (1, 2)])
    row = usage_row("\n".join(validate.heldout_section(small, held, None, held_seeds=pd.concat([held, repeats]))))
    raw, means = float(row["regret %"]), float(row["regret % (seed means)"])
    assert raw > float(clean["regret %"]) + 0.5  # the lucky run sets the bar
    # seed means at the best ratio: (0.97 + 1.015 + 1.015) / 3 = 1.0 of the clean loss, so the clean regret
    assert abs(means - float(clean["regret %"])) < 0.05, row
