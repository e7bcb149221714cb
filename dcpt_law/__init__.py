"""dcpt-law: choose the general/domain data mixture for continual pre-training from small runs.

    >>> import dcpt_law as dl
    >>> f = dl.fit("small_runs/results/pilot/losses.csv")        # D-CPT Law, both losses
    >>> dl.predict_ratio("1B", "20B", fit=f, tolerance=0.03)     # best domain share r_d

No torch import: the package needs numpy, scipy, pandas, lmfit and matplotlib only.
"""
__version__ = "0.1.0"

from .units import parse_count, format_count  # noqa: E402
from .table import load_losses  # noqa: E402
from .laws import LAWS, Law, Param, Term, get_law, register_law  # noqa: E402
from ._warn import ExtrapolationWarning, FitWarning  # noqa: E402
from .diagnostics import monotonicity  # noqa: E402
from .fitting import RECOMMENDED_LAW, Fit, LawFit, fit, fit_law, load_fit, metrics, pair_name  # noqa: E402

__all__ = [
    "__version__", "parse_count", "format_count", "load_losses", "LAWS", "Law", "Param", "Term", "get_law",
    "register_law", "fit", "fit_law", "RECOMMENDED_LAW", "load_fit", "Fit", "LawFit", "FitWarning",
    "ExtrapolationWarning", "metrics", "monotonicity", "pair_name",
]
from .optimisation import (ComputeResult, LimitedDomainResult, RatioResult, allocate_compute,  # noqa: E402
                           optimal_ratio_limited_domain, predict_ratio, ratio_frontier, use_fit)

__all__ += ["predict_ratio", "ratio_frontier", "optimal_ratio_limited_domain", "allocate_compute", "use_fit", "RatioResult",
            "LimitedDomainResult", "ComputeResult"]
from .evaluation import SPLITS, evaluate, folds, limited_domain_line, limited_domain_regret, ratio_regret, summary  # noqa: E402

__all__ += ["evaluate", "folds", "summary", "ratio_regret", "limited_domain_line", "limited_domain_regret", "SPLITS"]
from .crossings import (CrossingPrediction, CrossingScaling, crossing_scaling, domain_loss_turns, law_misses,  # noqa: E402
                        observed_crossings)

__all__ += ["crossing_scaling", "domain_loss_turns", "law_misses", "observed_crossings", "CrossingScaling", "CrossingPrediction"]
from .cross_domain import (CrossDomainFit, CrossDomainLaw, DomainCoefficient, domain_coefficient,  # noqa: E402
                           fit_cross_domain, leave_one_domain_out)

from .transfer import CalibratedFit, probe_rows  # noqa: E402

__all__ += ["fit_cross_domain", "domain_coefficient", "leave_one_domain_out", "CrossDomainFit", "CrossDomainLaw",
            "DomainCoefficient", "CalibratedFit", "probe_rows"]
from .cells import CellLimited, CellRatio, CellScaling, cell_scaling  # noqa: E402
from .consensus import Consensus, usage1_consensus  # noqa: E402

__all__ += ["cell_scaling", "CellScaling", "CellRatio", "CellLimited", "usage1_consensus", "Consensus"]
