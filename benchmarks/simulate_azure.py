"""simulate on the Azure conversation trace (19,366 requests) and examples/fleet-hetero.yaml.

Target (issue #3): under 3 s wall per policy. Run: python benchmarks/simulate_azure.py
Trace: Azure LLM inference traces 2023 (Microsoft Azure, CC-BY 4.0, Azure/AzurePublicDataset).
"""

from __future__ import annotations

import time
from pathlib import Path

from wattserve.core.fleet import load_fleet
from wattserve.core.workload import load_workload
from wattserve.simulate import comparison_table, simulate

REPO = Path(__file__).resolve().parent.parent
TRACE = REPO.parent / "shared" / "traces" / "azure_llm_2023_conv.csv"
POLICIES = ("round_robin", "least_loaded", "cost", "energy", "slo", "edge_first")


def main() -> None:
    fleet = load_fleet(REPO / "examples" / "fleet-hetero.yaml")
    rows = []
    for policy in POLICIES:
        wl = load_workload(TRACE, default_model="llama-3.1-8b")
        t0 = time.perf_counter()
        report, _ = simulate(fleet, wl, policy)
        wall = time.perf_counter() - t0
        rows.append(report)
        print(f"{policy:14} {len(wl.requests):,} requests: {wall:.2f} s wall (target < 3 s)")
    print()
    print(comparison_table(rows))


if __name__ == "__main__":
    main()
