"""wattserve: estimate, plan, simulate and serve LLM inference across heterogeneous hardware.

    from wattserve import estimate
    e = estimate("llama-3.1-8b", "h100-sxm", batch=8, prompt_tokens=1024, output_tokens=256)
    e.tpot_s, e.energy_j_per_token, e.usd_per_mtok

    from wattserve import rank
    r = rank("llama-3.1-70b", slo_tpot_s=0.05, power_envelope_w=1e6)
    r.rows[0].hardware, r.rows[0].usd_per_mtok, r.excluded

Importing wattserve does no I/O; catalogs are read on first use.
"""

from wattserve.calibrate import fit_calibration, read_measurements
from wattserve.core.catalog import Catalog, load_catalog
from wattserve.core.cost import CostAssumptions
from wattserve.core.deployment import Deployment
from wattserve.core.hardware import Hardware, Provider
from wattserve.core.modelspec import ModelSpec, builtin_model_ids, load_model
from wattserve.core.params import Calibration, EngineParams, load_calibration
from wattserve.core.perf import PerfModel, StepCost, perf_model
from wattserve.errors import (
    CalibrationError,
    ConfigError,
    MissingFigureError,
    PlanInfeasibleError,
    UnknownNameError,
    WattserveError,
)
from wattserve.estimate import Estimate, estimate
from wattserve.plan import Plan, plan
from wattserve.rank import Ranking, rank

__version__ = "0.1.0"

__all__ = [
    "Calibration",
    "CalibrationError",
    "Catalog",
    "ConfigError",
    "CostAssumptions",
    "Deployment",
    "EngineParams",
    "Estimate",
    "Hardware",
    "MissingFigureError",
    "ModelSpec",
    "PerfModel",
    "Plan",
    "PlanInfeasibleError",
    "Provider",
    "Ranking",
    "StepCost",
    "UnknownNameError",
    "WattserveError",
    "builtin_model_ids",
    "estimate",
    "fit_calibration",
    "load_calibration",
    "load_catalog",
    "load_model",
    "perf_model",
    "plan",
    "rank",
    "read_measurements",
]
