"""The configuration search (core/configs.py) that `rank` and `plan` share."""

from __future__ import annotations

import pytest

from wattserve import estimate, load_catalog, load_model
from wattserve.core.configs import Candidate, DeviceConfigs, SearchSpace, check_slo, search_configs
from wattserve.core.workload import SLO
from wattserve.errors import ConfigError

P, OUT = 1020, 129


def _search(
    model: str, hw: str, slo: SLO | None = None, space: SearchSpace | None = None
) -> DeviceConfigs:
    cat = load_catalog()
    return search_configs(
        load_model(model),
        cat.device(hw),
        cat,
        slo=slo or SLO(),
        prompt_tokens=P,
        output_tokens=OUT,
        space=space,
    )


def _usd(c: Candidate) -> float:
    assert c.estimate.usd_per_mtok is not None
    return c.estimate.usd_per_mtok


def test_every_feasible_candidate_is_estimate_for_its_configuration_and_meets_the_slo() -> None:
    res = _search("llama-3.1-70b", "h100-sxm")
    assert res.status == "ok" and res.feasible
    for c in res.feasible:
        e = estimate(
            "llama-3.1-70b",
            "h100-sxm",
            tp=c.layout.tp,
            pp=c.layout.pp,
            dtype=c.layout.dtype,
            batch=c.batch,
            prompt_tokens=P,
            output_tokens=OUT,
        )
        assert e == c.estimate
        assert e.ttft_s is not None and e.ttft_s <= 2.0
        assert e.tpot_s is not None and e.tpot_s <= 0.2


def test_the_largest_batch_is_exact_one_more_misses_the_slo_or_does_not_fit() -> None:
    slo = SLO(ttft_s=1.0, tpot_s=0.03)
    res = _search("llama-3.1-8b", "h100-sxm", slo)
    for c in res.feasible:
        if c.batch == c.max_batch_slo and c.batch < 1024:
            lay = c.layout
            e = estimate(
                "llama-3.1-8b",
                "h100-sxm",
                tp=lay.tp,
                pp=lay.pp,
                dtype=lay.dtype,
                batch=c.batch + 1,
                prompt_tokens=P,
                output_tokens=OUT,
            )
            over = e.ttft_s is None or e.tpot_s is None or e.ttft_s > 1.0 or e.tpot_s > 0.03
            assert not e.fits or over


def test_the_largest_feasible_batch_is_best_on_cost_checked_against_every_batch() -> None:
    """Brute force over every batch of one layout: none beats the search's pick on $/token."""
    slo = SLO(ttft_s=2.0, tpot_s=0.05)
    res = _search("llama-3.1-8b", "l4", slo, space=SearchSpace(max_tp=1, max_devices=1))
    best = res.best(_usd)
    assert best is not None
    for b in range(1, best.max_batch_slo + 1):
        e = estimate(
            "llama-3.1-8b",
            "l4",
            dtype=best.layout.dtype,
            batch=b,
            prompt_tokens=P,
            output_tokens=OUT,
        )
        assert e.usd_per_mtok is not None and e.usd_per_mtok >= _usd(best) - 1e-12


def test_a_device_that_cannot_hold_the_model_says_why_and_what_it_would_need() -> None:
    res = _search("llama-3.1-70b", "jetson-orin-nano-8gb")
    assert res.status == "does-not-fit"
    assert "need" in res.no_fit and "device" in res.no_fit


def test_sram_parts_take_the_chips_the_model_needs() -> None:
    res = _search("llama-3.1-70b", "groq-lpu")
    assert res.status == "ok"
    assert all(c.layout.pp is None and c.devices > 100 for c in res.feasible)


def test_an_impossible_slo_gives_the_closest_miss() -> None:
    res = _search("llama-3.1-8b", "h100-sxm", SLO(ttft_s=1e-6, tpot_s=1e-6))
    assert res.status == "misses-slo" and not res.feasible
    assert res.closest_miss is not None and res.closest_miss.slo_excess > 1


def test_a_missing_figure_is_named() -> None:
    res = _search("llama-3.1-8b", "hailo-10h")
    assert res.status == "missing-figure"
    assert any("mem_bw_gbps" in m for m in res.missing)


@pytest.mark.parametrize("ttft, tpot, flag", [(0.0, 0.2, "--slo-ttft"), (2.0, -1.0, "--slo-tpot")])
def test_slo_must_be_positive(ttft: float, tpot: float, flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        check_slo(SLO(ttft, tpot))
