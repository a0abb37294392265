"""simulate's table where a site's devices have no power figures: its `peak W` and `over cap s`
had printed 0 and 0.00, as if the site had been measured at 0 W, where `--json` says null.
Now '-' where no site's draw is known, and the known part marked '+?' where some are not."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from wattserve.cli.app import app

DARK = """devices:
  dark-npu:
    name: Dark NPU
    vendor: Acme
    category: asic
    software: plugin
    maturity: pilot
    source: "a test device with no power figures"
    memory_gb: 96
    mem_bw_gbps: 3200
    peak_tflops: {bf16: 800}
    usd_per_hour: 2.0
"""


def run(tmp_path: Path, *sites: str) -> tuple[str, dict[str, object]]:
    (tmp_path / "hw.yaml").write_text(DARK)
    devices = {"dark": "dark-npu", "lit": "h100-sxm"}
    fleet = "hardware_files: [hw.yaml]\nsites:\n" + "".join(
        f"  {s}: {{kind: datacenter}}\n" for s in sites
    )
    fleet += "deployments:\n" + "".join(
        f"  {s}: {{site: {s}, model: llama-3.1-8b, hardware: {devices[s]}}}\n" for s in sites
    )
    (tmp_path / "fleet.yaml").write_text(fleet)
    trace = tmp_path / "t.jsonl"
    trace.write_text(
        "".join(
            json.dumps({"arrival_s": i * 0.1, "prompt_tokens": 100, "output_tokens": 20}) + "\n"
            for i in range(20)
        )
    )
    args = ["simulate", "--fleet", str(tmp_path / "fleet.yaml"), "--trace", str(trace)]
    args += ["--model", "llama-3.1-8b", "--policy", "least_loaded"]
    text = CliRunner().invoke(app, args)
    assert text.exit_code == 0, text.output
    data = json.loads(CliRunner().invoke(app, [*args, "--json"]).output)
    return text.output, data


def row(text: str) -> list[str]:
    return next(ln for ln in text.splitlines() if ln.startswith("least_loaded")).split()


def test_a_site_without_power_figures_reads_unknown_not_zero(tmp_path: Path) -> None:
    text, data = run(tmp_path, "dark")
    assert data["sites"]["dark"]["peak_power_w"] is None  # type: ignore[index]
    assert row(text)[-2:] == ["-", "-"]


def test_the_known_sites_part_is_marked_where_another_is_unknown(tmp_path: Path) -> None:
    text, data = run(tmp_path, "dark", "lit")
    lit = data["sites"]["lit"]  # type: ignore[index]
    assert lit["peak_power_w"] > 0
    assert row(text)[-2] == f"{lit['peak_power_w']:.0f}+?" and row(text)[-1].endswith("+?")
