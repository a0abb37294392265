"""What a simulation gathers while it runs, for its report (simulate/report.py)."""

from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass, field

from wattserve.core.engine import EngineModel
from wattserve.core.governor import PowerGovernor


@dataclass
class Outcome:
    """Everything the report needs, gathered while the simulation runs."""

    policy: str
    requests: int = 0
    completed: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    rejected_rows: list[tuple[int, str]] = field(default_factory=list)
    # latencies in compact float arrays: a million requests would otherwise keep 3M floats alive
    ttft: array[float] = field(default_factory=lambda: array("d"))
    tpot: array[float] = field(default_factory=lambda: array("d"))
    e2e: array[float] = field(default_factory=lambda: array("d"))
    slo_met: int = 0
    output_tokens: int = 0
    served_by: Counter[str] = field(default_factory=Counter)
    tokens_by: Counter[str] = field(default_factory=Counter)
    hosted_usd: float = 0.0
    hosted_tokens: int = 0
    outage: Counter[str] = field(default_factory=Counter)
    power_waits: int = 0
    span_s: float = 0.0
    wall_s: float = 0.0
    engines: list[EngineModel] = field(default_factory=list)
    engine_site: list[str] = field(default_factory=list)
    engine_pool: list[str] = field(default_factory=list)
    governor: PowerGovernor | None = None
    # capped sites whose cap leaves less above the idle draw than one request adds on any of
    # their deployments: why every request there is refused (cap_blocks)
    cap_blocks: dict[str, str] = field(default_factory=dict)
