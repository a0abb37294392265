"""serve against simulate: what the gateway and the simulator decide alike (this session's
leftovers of docs/bench.md, "serve against simulate, request by request")."""

from __future__ import annotations

from pathlib import Path

import httpx
from serving import FAST_FLEET, gateway, write_trace

from wattserve.core.workload import load_workload
from wattserve.serve.residency import HeaderError, Residency, residency


def _chat(url: str, slo: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "llama-3.2-1b", "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-wattserve-slo": slo},
        timeout=30,
    )


def test_a_slos_block_naming_only_the_default_refuses_other_classes_on_both_clocks(
    tmp_path: Path,
) -> None:
    """simulate refuses a row naming a class its workload's `slos:` block lacks, even a block
    naming only `default`; the gateway given that block (`--slos`) served such a request under
    the default class, as if it had been given no classes."""
    write_trace(
        tmp_path / "t.jsonl",
        [
            {"arrival_s": 0.0, "prompt_tokens": 20, "output_tokens": 4, "slo": "default"},
            {"arrival_s": 0.5, "prompt_tokens": 20, "output_tokens": 4, "slo": "gold"},
        ],
    )
    workload_file = tmp_path / "w.yaml"
    workload_file.write_text("trace: t.jsonl\nslos:\n  default: {ttft_s: 2, tpot_s: 0.2}\n")
    workload = load_workload(workload_file, default_model="llama-3.2-1b")
    assert [r.slo for r in workload.requests] == ["default"]
    assert [row for row, _ in workload.bad_rows] == [2]
    assert "unknown slo 'gold'" in workload.bad_rows[0][1]
    with gateway(tmp_path, FAST_FLEET, "--slos", str(workload_file)) as s:
        default, gold = _chat(s.url, "default"), _chat(s.url, "gold")
    assert default.status_code == 200, default.text
    assert gold.status_code == 400, gold.text
    assert "x-wattserve-slo 'gold' is not an SLO class of this gateway (default)" in gold.text
    assert gold.json()["error"]["param"] == "x-wattserve-slo"


def test_the_slo_header_loses_only_the_spaces_http_drops() -> None:
    """A class name that begins or ends with a space is no class simulate reads (a trace row's
    is refused), and HTTP drops only spaces and tabs around a header's value: the gateway
    stripped every Unicode space as well, serving 'default' + NBSP as 'default'."""
    given = ("default", "batch")
    assert residency([], [], ("dc",), ["default\u00a0"], given) == HeaderError(
        "x-wattserve-slo 'default\u00a0' is not an SLO class of this gateway (default, batch)",
        "x-wattserve-slo",
    )
    assert residency([], [], ("dc",), [" batch\t"], given) == Residency(None, False, "batch")
    # with no classes given, any name is served under the default, as simulate does
    assert residency([], [], ("dc",), ["gold"], ()) == Residency(None, False, "gold")


def test_the_data_local_header_loses_only_the_spaces_http_drops() -> None:
    """As x-wattserve-slo: 'false' + NBSP was read as false, where a value not understood is
    refused (never read as false: the request may not leave its site)."""
    sites = ("edge",)
    assert isinstance(residency(["edge"], ["false\u00a0"], sites), HeaderError)
    assert isinstance(residency(["edge"], ["\u2003true"], sites), HeaderError)
    assert residency(["edge"], [" TRUE\t"], sites) == Residency("edge", True, "default")
