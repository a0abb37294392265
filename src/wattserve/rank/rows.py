"""One row of the ranking: a device at one configuration, or a hosted API, and its metrics.

Every figure comes from the row's `Estimate` (the same numbers `wattserve estimate` prints for
that configuration); the row only renames them and adds ratios of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from wattserve.core.hardware import Hardware, Provider
from wattserve.estimate.api import Estimate

# Sort keys: the metric and whether smaller is better.
SORT_KEYS: dict[str, bool] = {
    "usd_per_mtok": True,
    "j_per_token": True,
    "tokens_per_s": False,
    "tokens_per_s_per_kw": False,
    "tpot_s": True,
    "ttft_s": True,
    "envelope_tokens_per_s": False,
}
# When a row's own sort metric is unknown (a device without a price), its configuration is
# chosen on these, in order.
FALLBACK_KEYS = ("usd_per_mtok", "j_per_token", "tokens_per_s")

HOSTED = "hosted-api"


@dataclass(frozen=True, slots=True)
class Row:
    """A ranked entry. `tokens_per_s` is per device group (a hosted API's is unpublished);
    `peak_power_w` is the group's highest step power, what a power envelope must provision.
    `unknown` says why each None metric is unknown; `unverified` names the figures behind the
    row that the catalog marks unverified; `slo_unchecked` names SLO terms a hosted API does
    not publish."""

    kind: str  # "device" or "hosted"
    hardware: str
    name: str
    category: str
    software: str
    maturity: str
    year: int | None
    devices: int | None  # None: a hosted API's (its hardware is not published)
    tp: int | None
    pp: int | None
    dtype: str | None
    kv_dtype: str | None
    batch: int
    ttft_s: float | None
    tpot_s: float | None
    tokens_per_s_per_user: float | None
    tokens_per_s: float | None
    usd_per_mtok: float | None
    j_per_token: float | None
    tokens_per_s_per_kw: float | None
    power_w: float | None
    peak_power_w: float | None
    mem_bw_utilisation: float | None
    decode_bound: str | None
    cost_basis: str
    unverified: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()
    slo_unchecked: tuple[str, ...] = ()
    pareto_usd_j: bool = False
    pareto_usd_speed: bool = False
    envelope_groups: int | None = None
    envelope_tokens_per_s: float | None = None
    envelope_usd_per_hour: float | None = None
    crossover_days: float | None = None

    @property
    def usd_per_hour(self) -> float | None:
        """Dollars per hour of one group running this configuration flat out."""
        if self.usd_per_mtok is None or self.tokens_per_s is None:
            return None
        return self.usd_per_mtok * self.tokens_per_s * 3600 / 1e6

    def metric(self, key: str) -> float | None:
        value: float | None = getattr(self, key)
        return value

    def sort_key(self, key: str) -> tuple[tuple[bool, float], ...]:
        """Order on `key`, then the fallbacks; unknown values last."""
        out = []
        for k in (key, *FALLBACK_KEYS):
            v = self.metric(k)
            if v is None:
                out.append((True, 0.0))
            else:
                out.append((False, v if SORT_KEYS[k] else -v))
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        out["usd_per_hour"] = self.usd_per_hour
        return out


def _mem_bw_utilisation(e: Estimate) -> float | None:
    """Share of the published memory bandwidth a decode step uses (memory time, the elementwise
    kernels' included, over step time, times the efficiency the model assumes bandwidth runs
    at)."""
    d, perf = e.decode_cost, e.perf
    if d is None or perf is None or math.isinf(perf.bytes_rate) or d.time_s <= 0:
        return None
    return (d.memory_s + d.elementwise_s) / d.time_s * perf.params.eff_memory


def _unverified(e: Estimate, hw: Hardware) -> tuple[str, ...]:
    names = []
    if e.perf is not None:
        names = [k for k, f in sorted(e.perf.figures_used.items()) if not f.verified]
    price_key = {"rent": "usd_per_hour", "own": "list_price_usd"}.get(e.cost_basis)
    if price_key is not None:
        fig = hw.figures.get(price_key)
        if fig is not None and not fig.verified:
            names.append(price_key)
    return tuple(names)


def device_row(e: Estimate, hw: Hardware) -> Row:
    """The row for a device configuration that `estimate` evaluated."""
    tps = e.output_tokens_per_s
    per_kw = None if tps is None or not e.power_w else tps / (e.power_w / 1000)
    peak = None
    if e.prefill_cost is not None and e.decode_cost is not None and e.power_w is not None:
        peak = max(e.prefill_cost.power_w, e.decode_cost.power_w)
    return Row(
        kind="device",
        hardware=hw.id,
        name=hw.name,
        category=hw.category,
        software=hw.software,
        maturity=hw.maturity,
        year=hw.year,
        devices=e.devices,
        tp=e.tp,
        pp=e.pp,
        dtype=e.dtype,
        kv_dtype=e.kv_dtype,
        batch=e.batch,
        ttft_s=e.ttft_s,
        tpot_s=e.tpot_s,
        tokens_per_s_per_user=None if not e.tpot_s else 1.0 / e.tpot_s,
        tokens_per_s=tps,
        usd_per_mtok=e.usd_per_mtok,
        j_per_token=e.energy_j_per_token,
        tokens_per_s_per_kw=per_kw,
        power_w=e.power_w,
        peak_power_w=peak,
        mem_bw_utilisation=_mem_bw_utilisation(e),
        decode_bound=e.decode_bound,  # StepCost.bound, as `estimate` prints it
        cost_basis=e.cost_basis,
        unverified=_unverified(e, hw),
        unknown=e.missing,
    )


def hosted_row(e: Estimate, provider: Provider) -> Row:
    """The row for a hosted API: its published speed and token prices; energy unknown."""
    offer = provider.offers[e.model]
    unverified = tuple(
        k
        for k in ("usd_per_mtok_input", "usd_per_mtok_output", "ttft_s", "output_tokens_per_s")
        if getattr(offer, k) is not None and not getattr(offer, k).verified
    )
    unchecked = tuple(k for k, v in (("ttft_s", e.ttft_s), ("tpot_s", e.tpot_s)) if v is None)
    unknown = (
        *e.missing,
        f"{provider.id} publishes no capacity: tokens/s per group and the envelope are unknown",
    )
    return Row(
        kind="hosted",
        hardware=provider.id,
        name=provider.name,
        category=HOSTED,
        software="hosted API",
        maturity=provider.maturity,
        year=None,
        devices=None,
        tp=None,
        pp=None,
        dtype=None,
        kv_dtype=None,
        batch=1,
        ttft_s=e.ttft_s,
        tpot_s=e.tpot_s,
        tokens_per_s_per_user=e.output_tokens_per_s,
        tokens_per_s=None,
        usd_per_mtok=e.usd_per_mtok,
        j_per_token=None,
        tokens_per_s_per_kw=None,
        power_w=None,
        peak_power_w=None,
        mem_bw_utilisation=None,
        decode_bound=None,
        cost_basis=e.cost_basis,
        unverified=unverified,
        unknown=unknown,
        slo_unchecked=unchecked,
    )
