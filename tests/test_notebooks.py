"""The notebooks run top to bottom on CPU (nbclient), and say what they should."""
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="notebook tests need the [test] extra")
nbclient = pytest.importorskip("nbclient", reason="notebook tests need the [test] extra")

ROOT = Path(__file__).resolve().parent.parent
NB = ROOT / "notebooks"


def run(name):
    nb = nbformat.read(NB / name, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{name} is committed with outputs"
    nbclient.NotebookClient(nb, timeout=240, kernel_name="python3",
                            resources={"metadata": {"path": str(NB)}}).execute()
    text, images = [], 0
    for c in nb.cells:
        for o in c.get("outputs", []):
            assert o.get("output_type") != "error", f"{name}: {o.get('ename')}: {o.get('evalue')}"
            text.append(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")))
            images += "image/png" in o.get("data", {})
    return "\n".join(text), images


def test_quickstart_notebook():
    text, images = run("quickstart.ipynb")
    assert text.count("RatioResult(") >= 3 and "LimitedDomainResult(" in text and "ComputeResult(" in text
    assert images >= 1


def test_pilot_to_recommendation_notebook():
    text, images = run("pilot_to_recommendation.ipynb")
    assert "law dcpt" in text and "RatioResult(" in text and "CrossingPrediction(" in text
    assert "miss" in text and "crossing" in text  # law_misses' table: the law against the pilot sizes' runs
    assert images >= 5


def test_larger_model_notebook():
    text, images = run("larger_model.ipynb")
    assert "Cells of domain 'code'" in text and "CellRatio(" in text and "CrossingPrediction(" in text
    assert "R2" in text and "MAPE" in text and "m's runs: r_d" in text
    assert images >= 1


def test_scarce_domain_data_notebook():
    text, images = run("scarce_domain_data.ipynb")
    assert text.count("CellLimited(") == 4 and text.count("LimitedDomainResult(") == 4  # one per budget
    assert "best r_d in m's runs" in text and "regret %" in text  # scored on m's held-out lines
    assert images >= 1
