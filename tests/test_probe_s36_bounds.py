"""Session 36's probes: inputs a few bytes long that made simulate hold gigabytes. A site's
power timeline had one bin per 1/400 of the trace's span for as long as the run lasted (one
request behind a day's link outage: 8.6 million bins a site, 2.5 GB)."""

from __future__ import annotations

from pathlib import Path

from wattserve.core.fleet import load_fleet
from wattserve.core.governor import MAX_BINS, SitePower
from wattserve.core.workload import SLO, Request, Workload
from wattserve.simulate import simulate


def test_a_site_timeline_keeps_at_most_max_bins_and_each_bins_peak() -> None:
    s = SitePower(cap_w=None, bin_s=0.01)
    peaks = {}
    for i, t in enumerate([1.0, 50.0, 400.0, 9_000.0, 86_400.0]):
        s.change(t, 100.0 * (i + 1) if i % 2 == 0 else -50.0)
        peaks[t] = s.power_w
    s.advance(1e6)
    assert len(s.bins) <= MAX_BINS and s.bin_s * MAX_BINS > 1e6
    assert max(s.bins.values()) == max(peaks.values()) == s.peak_w
    # each stretch's power is in the bin that holds it, however wide the bins became
    assert s.bins[int(86_400.0 / s.bin_s)] == peaks[86_400.0]


def test_one_request_behind_a_days_outage_keeps_a_bounded_timeline(tmp_path: Path) -> None:
    sites = "".join(f"  dc{i}: {{kind: datacenter, power_cap_w: 5000}}\n" for i in range(4))
    links = "".join(
        f"  - {{between: [edge, dc{i}], rtt_ms: 10, outages: [{{start_s: 0, end_s: 86000}}]}}\n"
        for i in range(4)
    )
    deps = "".join(
        f"  h{i}: {{site: dc{i}, model: llama-3.1-8b, hardware: h100-sxm}}\n" for i in range(4)
    )
    path = tmp_path / "outage.yaml"
    path.write_text(f"sites:\n  edge: {{kind: edge}}\n{sites}links:\n{links}deployments:\n{deps}")
    wl = Workload(
        requests=[Request(0, 0.0, 100, 10, "llama-3.1-8b", origin="edge")],
        slos={"default": SLO()},
    )
    report, out = simulate(load_fleet(path), wl, max_wait_s=86_400)
    assert report["completed"] == 1 and report["ttft_s"]["p50"] > 86_000
    assert out.governor is not None
    for site in out.governor.sites.values():
        assert len(site.bins) <= MAX_BINS


def test_a_fleet_holds_at_most_max_replicas_in_all(tmp_path: Path) -> None:
    """100,000 a deployment was the only bound: 50 such deployments (3 KB of YAML) took 6.5 GB
    before the run was killed."""
    import pytest

    from wattserve.core.fleet import MAX_REPLICAS
    from wattserve.errors import ConfigError

    deps = "".join(
        f"  h{i}: {{site: dc, model: llama-3.1-8b, hardware: h100-sxm, replicas: 40000}}\n"
        for i in range(3)
    )
    path = tmp_path / "f.yaml"
    path.write_text(f"sites:\n  dc: {{kind: datacenter}}\ndeployments:\n{deps}")
    with pytest.raises(ConfigError) as err:
        load_fleet(path)
    assert err.value.field == "deployments.h2.replicas" and err.value.line == 6
    assert f"at most {MAX_REPLICAS:,} replicas in a fleet" in str(err.value)
    path.write_text(
        f"sites:\n  dc: {{kind: datacenter}}\ndeployments:\n{deps[: len(deps) * 2 // 3]}"
    )
    assert sum(d.replicas for d in load_fleet(path).deployments) == 80_000


def test_sigterm_ends_simulate_through_its_clean_ups(tmp_path: Path) -> None:
    """SIGTERM (`timeout`, `kill`) ended the run at once, leaving a 75 MB hidden
    `.req.jsonl.*.part` behind; Ctrl-C removed it. It now ends as Ctrl-C does."""
    import signal
    import subprocess
    import sys
    import time

    wl = tmp_path / "wl.yaml"
    wl.write_text(
        "generator: {kind: poisson, rate_rps: 2000, duration_s: 150, prompt_tokens: "
        "{dist: fixed, value: 100}, output_tokens: {dist: fixed, value: 20}}\n"
        "classes: [{model: llama-3.1-8b}]\n"
    )
    out = tmp_path / "out"
    out.mkdir()
    fleet = Path(__file__).parent.parent / "examples" / "fleet-homogeneous.yaml"
    args = ["--fleet", str(fleet), "--trace", str(wl), "--requests-out", str(out / "r.jsonl")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "wattserve", "simulate", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not any(out.iterdir()) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it began writing: make it longer"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        proc.kill()
    assert list(out.iterdir()) == []
