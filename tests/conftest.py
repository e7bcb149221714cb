"""Shared synthetic data: losses generated from known D-CPT parameters with multiplicative noise."""
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dcpt_law.laws import DCPT

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def pytest_configure(config):
    """Under pytest-xdist (`-n N`) each worker trains with its share of the cores, as a sweep worker does
    (training.pick_device reads DCPT_CPU_THREADS): N workers x every core each would oversubscribe the CPU."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers and "DCPT_CPU_THREADS" not in os.environ:
        share = str(max(1, (os.cpu_count() or 1) // int(workers)))
        os.environ["DCPT_CPU_THREADS"] = share
        os.environ.setdefault("OMP_NUM_THREADS", share)  # torch is imported after this, by the test modules

TRUE_DOMAIN = dict(E=1.6, A=25.0, alpha=0.28, B=60.0, beta=0.3, eta=0.5, C=0.6, gamma=0.5, eps=0.04)
TRUE_GENERAL = dict(E=1.9, A=45.0, alpha=0.3, B=40.0, beta=0.28, eta=0.3, C=0.2, gamma=0.6, eps=0.08)
SIZES = np.array([1e5, 4e5, 1.6e6, 6.4e6])
TOKENS = np.geomspace(1e6, 1e8, 8)
RATIOS = np.array([0, 0.1, 0.2, 1 / 3, 0.5, 2 / 3, 0.8, 0.9, 1.0])


def synthetic_table(seed=0, noise=0.005, sizes=SIZES, tokens=TOKENS, ratios=RATIOS, base=True):
    """4 sizes x 8 token counts x 9 ratios from the true laws, plus base-model rows (tokens=0)."""
    N, D, r = (a.ravel() for a in np.meshgrid(sizes, tokens, ratios, indexing="ij"))
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "domain": "code", "model_size": N, "tokens": D, "domain_ratio": r,
        "general_loss": DCPT.predict(TRUE_GENERAL, N, D, 1 - r) * (1 + noise * rng.standard_normal(N.size)),
        "domain_loss": DCPT.predict(TRUE_DOMAIN, N, D, r) * (1 + noise * rng.standard_normal(N.size)),
        "seed": 0,
    })
    if base:
        # base losses: the general loss the model had before CPT, a little below the CPT curve
        b = pd.DataFrame({"domain": "code", "model_size": sizes, "tokens": 0.0, "domain_ratio": 0.0,
                          "general_loss": DCPT.predict(TRUE_GENERAL, sizes, 3e7, 1.0),
                          "domain_loss": DCPT.predict(TRUE_DOMAIN, sizes, 3e7, 0.0), "seed": 0})
        df = pd.concat([b, df], ignore_index=True)
    return df


@pytest.fixture(scope="session")
def table():
    return synthetic_table(0)


@pytest.fixture(scope="session")
def fitted(table):
    import dcpt_law as dl

    return dl.fit(table, warn=False)


def assert_jacobian_matches(law, params: dict, N, D, r, G=None, atol: float = 1e-4):
    """The analytic Jacobian of ``law.log_predict`` against forward differences in raw space at ``params``."""
    ctx = law.prepare(N, D, r, **({} if G is None else {"G": G}))
    theta = law.raw(np.array([[params[n] for n in law.param_names]]), ctx)
    f0, J = law.log_predict(theta, ctx, jac=True)
    num = np.stack([(law.log_predict(theta + 1e-6 * np.eye(law.n_params)[i], ctx) - f0) / 1e-6
                    for i in range(law.n_params)], 1)
    np.testing.assert_allclose(J, num, atol=atol)
