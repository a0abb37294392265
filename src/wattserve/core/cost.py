"""Cost: rented ($/h), owned (list price amortised + electricity x PUE), or per token."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from wattserve.core.hardware import Hardware
from wattserve.errors import ConfigError

CostBasis = Literal["auto", "rent", "own"]
SECONDS_PER_YEAR = 365.25 * 24 * 3600
J_PER_KWH = 3.6e6


@dataclass(frozen=True, slots=True)
class CostAssumptions:
    """Inputs to the cost of owned hardware; defaults are stated in docs/model.md.

    Electricity: about the 2023 US industrial average (EIA Electric Power Monthly, ~8 c/kWh).
    PUE: the Uptime Institute 2023 survey's industry average (~1.58), rounded to 1.5.
    Lifetime: a common 4-year depreciation schedule for accelerators.
    """

    basis: CostBasis = "auto"
    electricity_usd_per_kwh: float = 0.08
    pue: float = 1.5
    lifetime_years: float = 4.0


@dataclass(frozen=True, slots=True)
class CostRate:
    """Dollars per second of holding the devices, plus dollars per joule they draw."""

    basis: Literal["rent", "own", "unknown"]
    usd_per_s: float
    usd_per_j: float
    reason: str = ""

    def usd(self, seconds: float, joules: float) -> float:
        # a rented price already includes power: unknown (NaN) joules must not make it unknown
        energy = self.usd_per_j * joules if self.usd_per_j else 0.0
        return self.usd_per_s * seconds + energy

    @property
    def known(self) -> bool:
        """Whether the devices have a price (else dollars of their use are unknown: None in
        what serve bills and records, left out of simulate's sums)."""
        return self.basis != "unknown"

    def billable(self) -> tuple[float, float]:
        """(usd_per_s, usd_per_j) a request is charged at: the rates, or 0 where dollars are
        unknown (reports name the unpriced deployments instead of printing NaN)."""
        if self.basis == "unknown":
            return 0.0, 0.0
        return self.usd_per_s, self.usd_per_j


def cost_rate(hw: Hardware, devices: int, assumptions: CostAssumptions) -> CostRate:
    """How `devices` devices of `hw` are charged for. Rented prices already include power."""
    hourly = hw.value("usd_per_hour")
    price = hw.value("list_price_usd")
    want = assumptions.basis
    if want in ("auto", "rent") and hourly is not None:
        return CostRate("rent", hourly * devices / 3600.0, 0.0)
    if want in ("auto", "own") and price is not None:
        capex = price * devices / (assumptions.lifetime_years * SECONDS_PER_YEAR)
        per_j = assumptions.electricity_usd_per_kwh * assumptions.pue / J_PER_KWH
        return CostRate("own", capex, per_j)
    missing = {"rent": "usd_per_hour", "own": "list_price_usd"}.get(
        want, "usd_per_hour or list_price_usd"
    )
    return CostRate(
        "unknown",
        float("nan"),
        float("nan"),
        f"{hw.id} has no {missing} in the catalog, so dollars cannot be computed",
    )


def token_usd(
    prompt_tokens: float,
    output_tokens: float,
    usd_per_mtok_input: float,
    usd_per_mtok_output: float,
) -> float:
    """Dollars of one request at per-token prices (a hosted API's), in $ per 1M tokens."""
    return (prompt_tokens * usd_per_mtok_input + output_tokens * usd_per_mtok_output) / 1e6


# Power usage effectiveness: facility power over IT power. At least 1 (the facility includes
# the IT); 5 is far past any facility on record (Uptime Institute survey averages are ~1.6).
MAX_PUE = 5.0


def check_pue(flag: str, value: Any) -> float:
    """`value` if it is a PUE between 1 and MAX_PUE, else ConfigError naming `flag`."""
    ok = not isinstance(value, bool) and isinstance(value, int | float)
    if not ok or not 1 <= value <= MAX_PUE:
        raise ConfigError(
            f"must be between 1 and {MAX_PUE:g} (facility power / IT power), got {value!r}",
            field=flag,
        )
    return float(value)
