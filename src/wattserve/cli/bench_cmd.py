"""`wattserve bench`."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from wattserve.bench import BenchOptions, progress_bar, run_bench
from wattserve.bench.run import check_url
from wattserve.bench.text import summary_text
from wattserve.cli.common import (
    check_regular_output,
    print_json,
    reports_errors,
    save_text,
)
from wattserve.core.sites import MAX_CARBON_G_PER_KWH
from wattserve.core.workload import SLO, load_workload
from wattserve.errors import ConfigError

MAX_TIMEOUT_S = 86400.0  # a day: no request is waited on longer


def carbon_map(values: list[str]) -> dict[str, float]:
    """`SITE=G` pairs or one figure for every site, in gCO2/kWh."""
    out: dict[str, float] = {}
    for part in (p for v in values for p in v.split(",")):  # SITE=G,SITE=G as well
        site, eq, g = part.strip().partition("=")
        if not eq:
            site, g = "*", site
        try:  # ASCII, as every file's numbers: float() also takes other scripts' digits
            grams = float(g) if g.isascii() else math.nan
        except ValueError:
            grams = math.nan
        if not site.strip() or not 0 <= grams <= MAX_CARBON_G_PER_KWH:  # NaN fails too
            raise ConfigError(
                f"'{part:.80}' is not SITE=G or G (gCO2 per kWh, 0 to {MAX_CARBON_G_PER_KWH:g})",
                field="--carbon-g-per-kwh",
            )
        if site.strip() in out:  # else the last would win without a word
            raise ConfigError(f"'{site.strip():.80}' is given twice", field="--carbon-g-per-kwh")
        out[site.strip()] = grams
    return out


def _check(
    name: str,
    value: float | None,
    *,
    whole: bool = False,
    finite: bool = False,
    most: float = math.inf,
) -> None:
    """A positive number; `finite`: not inf, `most`: the largest allowed."""
    if value is None:
        return
    if math.isnan(value) or value <= 0 or (whole and value != int(value)):
        raise ConfigError(f"must be a positive {'whole ' if whole else ''}number", field=name)
    if finite and math.isinf(value):
        raise ConfigError("must be a positive finite number", field=name)
    if value > most:
        raise ConfigError(f"must be a positive number of at most {most:g}", field=name)


def _check_text(name: str, value: str | None, what: str) -> None:
    """A model name or an API key bench sends: printable text. A byte that is not UTF-8 (read
    from the command line as a lone surrogate) cannot be sent as JSON, and a line break or
    other control character cannot be sent in a header."""
    if value is not None and not value.isprintable():
        bad = next(c for c in value if not c.isprintable())
        raise ConfigError(
            f"{what} holds {_char(bad)}: give printable UTF-8 text, no control characters",
            field=name,
        )


def _char(c: str) -> str:
    if 0xDC80 <= ord(c) <= 0xDCFF:  # how Python reads a byte that is not UTF-8 from argv
        return f"the byte 0x{ord(c) - 0xDC00:02x}, which is not UTF-8"
    return f"U+{ord(c):04X}, a control character" if ord(c) < 0xA0 else f"U+{ord(c):04X}"


def _shown(text: str) -> str:
    """A path or URL as the result records it: a byte that is not UTF-8 in its name (a lone
    surrogate as Python reads it) as a `\\udcff` escape, so that the JSON file can be read
    back (`compare` refuses lone surrogates) and the HTML report written."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@reports_errors
def bench_cmd(
    url: Annotated[str, typer.Option(help="The endpoint: http://host:port or http://host/v1.")],
    trace: Annotated[
        Path, typer.Option(help="Azure trace CSV, JSONL (wattserve or Mooncake), workload YAML.")
    ],
    model: Annotated[
        str | None,
        typer.Option(help="Model for rows that name none (default: the server's first)."),
    ] = None,
    endpoint: Annotated[str, typer.Option(help="chat or completions.")] = "chat",
    rate_scale: Annotated[float, typer.Option(help="Replay X times faster.")] = 1.0,
    request_rate: Annotated[
        float | None,
        typer.Option(
            help="Poisson arrivals at R requests/s instead of the trace's (inf: all now)."
        ),
    ] = None,
    concurrency: Annotated[int | None, typer.Option(help="At most N requests in flight.")] = None,
    duration: Annotated[
        float | None, typer.Option(help="Only requests arriving in the first S seconds.")
    ] = None,
    max_requests: Annotated[int | None, typer.Option(help="Only the first N requests.")] = None,
    api_key_env: Annotated[
        str | None, typer.Option(help="Environment variable that holds the API key.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for prompts, classes and arrivals.")] = 0,
    stream: Annotated[bool, typer.Option(help="Stream (--no-stream: whole answers).")] = True,
    exact_output: Annotated[
        str, typer.Option(help="Send ignore_eos/min_tokens: auto (if accepted), on, off.")
    ] = "auto",
    timeout: Annotated[
        float, typer.Option(help="Longest a request may take, s (at most a day).")
    ] = 600.0,
    ttft_slo: Annotated[
        float | None, typer.Option(help="TTFT limit for goodput, s (default: the workload's).")
    ] = None,
    tpot_slo: Annotated[
        float | None, typer.Option(help="TPOT limit for goodput, s (default: the workload's).")
    ] = None,
    carbon_g_per_kwh: Annotated[
        list[str] | None,
        typer.Option(help="Carbon intensity, SITE=G or G for all sites (repeatable)."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the JSON result.")] = False,
    out: Annotated[Path | None, typer.Option(help="Write the JSON result to FILE.")] = None,
    report: Annotated[Path | None, typer.Option(help="Write a self-contained HTML report.")] = None,
    progress: Annotated[
        bool | None, typer.Option(help="Progress bar on stderr (default: when it is a terminal).")
    ] = None,
) -> None:
    """Replay TRACE against an OpenAI-compatible endpoint: latency, throughput, $ and J."""
    if endpoint not in ("chat", "completions"):
        raise ConfigError("must be chat or completions", field="--endpoint")
    if exact_output not in ("auto", "on", "off"):
        raise ConfigError("must be auto, on or off", field="--exact-output")
    _check("--request-rate", request_rate)  # inf: all at once
    _check("--duration", duration)  # inf: the whole trace
    for name, value in (
        ("--rate-scale", rate_scale),
        ("--ttft-slo", ttft_slo),
        ("--tpot-slo", tpot_slo),
    ):
        _check(name, value, finite=True)
    _check("--timeout", timeout, finite=True, most=MAX_TIMEOUT_S)
    if request_rate is not None and rate_scale != 1.0:  # one of them would be ignored
        raise ConfigError(
            "--rate-scale speeds up the trace's arrival times and --request-rate replaces them "
            "with Poisson arrivals: give one",
            field="--rate-scale",
        )
    _check("--concurrency", concurrency, whole=True)
    _check("--max-requests", max_requests, whole=True)
    check_url(url)
    _check_text("--model", model, "the model name")
    key = None
    if api_key_env is not None:
        key = os.environ.get(api_key_env)
        if not key:
            raise ConfigError(
                f"the environment variable {api_key_env} is empty or unset", field="--api-key-env"
            )
        _check_text("--api-key-env", key, f"the key in {api_key_env}")
    carbon = carbon_map(carbon_g_per_kwh or [])
    if not trace.exists():
        raise ConfigError("no such trace file", path=str(trace), field="--trace")
    if not trace.is_file():
        raise ConfigError("not a regular file", path=str(trace), field="--trace")
    if out is not None and report is not None and out.resolve() == report.resolve():
        raise ConfigError(f"{out!s:.200} is also --out", field="--report")
    check_regular_output(out, "--out", trace, kind="bench")
    check_regular_output(report, "--report", trace, kind="html")
    # --duration cuts the requests by when they are sent: the trace's times, or with
    # --request-rate its Poisson times, drawn in the run (cut on the trace's, a rate of 0.1
    # sent its last request at 41 s of a 5 s run, and one of 100 all five in 42 ms)
    poisson = request_rate is not None
    wl = load_workload(
        trace,
        default_model="",
        seed=seed,
        rate_scale=rate_scale,
        duration_s=None if poisson else duration,
    )
    if ttft_slo is not None or tpot_slo is not None:
        wl.slos = {
            name: SLO(ttft_slo or s.ttft_s, tpot_slo or s.tpot_s) for name, s in wl.slos.items()
        }
    wl.require_requests(trace)
    opts = BenchOptions(
        url=url,
        model=model,
        endpoint=endpoint,
        stream=stream,
        request_rate=request_rate,
        concurrency=concurrency,
        max_requests=max_requests,
        duration_s=duration if poisson and duration != math.inf else None,
        api_key=key,
        seed=seed,
        timeout_s=timeout,
        exact_output=exact_output,
    )
    show = progress if progress is not None else sys.stderr.isatty()
    try:
        run, summary = run_bench(
            wl, opts, progress=progress_bar() if show else None, carbon_g_per_kwh=carbon
        )
    except KeyboardInterrupt:
        typer.echo("error: interrupted before any request completed", err=True)
        raise typer.Exit(130) from None
    result: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S"),
        "tool": "wattserve bench",
        "backend": f"openai-{endpoint}",
        "base_url": _shown(url),
        "endpoint_type": f"openai-{endpoint}" if endpoint == "chat" else "openai",
        "model_id": run.model,
        "trace": _shown(str(trace)),
        "num_prompts": len(run.results),  # in the trace (after --duration, --max-requests)
        "request_rate": "inf"
        if request_rate is not None and math.isinf(request_rate)
        else request_rate,
        "rate_scale": rate_scale,
        "max_concurrency": concurrency,
        "stream": stream,
        "exact_output": run.exact_output,
        "prompt_calibration": {
            "offset_tokens": run.calibration.offset,
            "tokens_per_word": run.calibration.slope,
            "measured": run.calibration.measured,
        },
        "slos": {k: {"ttft_s": v.ttft_s, "tpot_s": v.tpot_s} for k, v in wl.slos.items()},
        "stopped": run.stopped,
        "notes": run.notes,
        "bad_trace_rows": wl.bad_rows.total,
        "bad_trace_row_examples": wl.bad_rows[:10],
        **summary,
    }
    text = json.dumps(result, indent=2, allow_nan=False)
    if out is not None:
        save_text(out, text + "\n", "--out")
    if report is not None:
        from wattserve.bench.html import render

        save_text(report, render(result), "--report")
    if json_out:
        print_json(result)
    else:
        typer.echo(summary_text(result))
    sys.stdout.flush()  # a failed write (a full disk) is reported here, not at exit
    problems = _problems(result)
    for line in problems:
        typer.echo(line, err=True)
    if out is not None:
        typer.echo(f"result: {out}", err=True)
    if report is not None:
        typer.echo(f"report: {report}", err=True)
    if result["failed"] or result["stopped"]:
        raise typer.Exit(1)


def _problems(r: dict[str, Any]) -> list[str]:
    lines = [f"note: {n}" for n in r["notes"]]
    if r["bad_trace_rows"]:
        lines.append(
            f"warning: {r['bad_trace_rows']} malformed trace rows skipped, e.g. "
            + "; ".join(f"line {ln}: {why}" for ln, why in r["bad_trace_row_examples"][:3])
        )
    if r["failed"]:
        kinds = ", ".join(f"{k} {n}" for k, n in r["errors_by_kind"].items())
        lines.append(
            f"warning: {r['failed']} of {r['requests']} requests failed ({kinds}); "
            f"the figures cover the {r['completed']} that completed"
        )
        lines += [f"  {k}: {ex}" for k, ex in r["error_examples"].items()]
    if r["stopped"]:
        lines.append(
            f"warning: stopped early: {r['stopped']}; {r['not_sent']} requests were not sent"
        )
    return lines
