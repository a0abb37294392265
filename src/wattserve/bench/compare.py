"""Hold two result files side by side: `simulate --json`, `bench --json` and `vllm bench
serve`'s result file, each read into the same metrics (seconds, per second, $ and J), and the
error of the second against the first. Reading the files themselves: `results.py`."""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Any, NamedTuple

import numpy as np

from wattserve.bench.metrics import latency_stats, percentiles
from wattserve.core.records import OK, RequestRecord, per_token_s
from wattserve.errors import ConfigError

# (metric, unit) in the order they are shown
METRICS: tuple[tuple[str, str], ...] = (
    ("requests", ""),
    ("completed", ""),
    ("failed", ""),
    ("ttft_mean_s", "s"),
    ("ttft_p50_s", "s"),
    ("ttft_p90_s", "s"),
    ("ttft_p99_s", "s"),
    ("tpot_mean_s", "s"),
    ("tpot_p50_s", "s"),
    ("tpot_p90_s", "s"),
    ("tpot_p99_s", "s"),
    ("itl_mean_s", "s"),
    ("itl_p50_s", "s"),
    ("itl_p90_s", "s"),
    ("itl_p99_s", "s"),
    ("e2e_mean_s", "s"),
    ("e2e_p50_s", "s"),
    ("e2e_p90_s", "s"),
    ("e2e_p99_s", "s"),
    ("request_throughput", "req/s"),
    ("output_throughput", "tok/s"),
    ("output_tokens", "tok"),
    ("slo_attainment", ""),
    ("energy_j_per_token", "J"),
    ("usd_per_mtok", "$"),
)


WHOLE = frozenset(
    {"requests", "completed", "failed", "rejected", "output_tokens", "total_output_tokens"}
)
SHARES = frozenset({"slo_attainment"})
MAX_WHOLE = 2**53  # counts, token lengths and trace rows past this are not a count of anything
MAX_S = 1e9  # a latency or a time from the start past this (31 years) is not one measured


def _finite(v: float | None) -> float | None:
    """A computed figure, or None where it overflowed (JSON has no inf or NaN)."""
    return v if v is None or math.isfinite(v) else None


def _show(v: Any) -> str:
    """A value for a message: cut short (a file may hold megabytes in one field)."""
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_WHOLE:
        return "a number too large"
    return f"{v!r:.40}"


def figure(v: Any, name: str, *, whole: bool = False, share: bool = False) -> float | None:
    """A figure a result file gives: None when absent (null), else a finite number >= 0 (a
    whole one for counts, at most 1 for shares); anything else is a ConfigError naming it."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ConfigError(f"must be a number, got {_show(v)}", field=name)
    try:
        x = float(v)
    except OverflowError:  # an integer past 1e308
        raise ConfigError("must be finite, not a number too large", field=name) from None
    if not math.isfinite(x) or x < 0:
        raise ConfigError(f"must be a finite number >= 0, got {_show(v)}", field=name)
    if whole and not (x.is_integer() and x <= MAX_WHOLE):
        raise ConfigError(f"must be a whole number, got {_show(v)}", field=name)
    if share and x > 1:
        raise ConfigError(f"must be a share between 0 and 1, got {_show(v)}", field=name)
    return x


def seconds(v: Any, name: str, *, per: float = 1.0, unit: str = "s") -> float | None:
    """A latency a result file gives (in `unit`, `per` of them a second): a figure, and within
    MAX_S seconds; else a ConfigError naming it."""
    x = figure(v, name)
    if x is not None and x / per > MAX_S:
        raise ConfigError(
            f"{x:.3g} {unit} is past {MAX_S:.0e} s (31 years): not a latency measured", field=name
        )
    return None if x is None else x / per


def _num(raw: dict[str, Any], key: str) -> float | None:
    return figure(raw.get(key), key, whole=key in WHOLE, share=key in SHARES)


def _ms(raw: dict[str, Any], key: str) -> float | None:
    return seconds(raw.get(key), key, per=1e3, unit="ms")


def kind_of(raw: Any) -> str:
    """simulate, bench, requests (simulate --requests-out) or vllm; '' for none of them."""
    if not isinstance(raw, dict):
        return ""
    if raw.get("tool") == "wattserve requests":
        return "requests"
    if raw.get("tool") == "wattserve bench":
        return "bench"
    if "policy" in raw and isinstance(raw.get("ttft_s"), dict):
        return "simulate"
    if "mean_ttft_ms" in raw or "request_throughput" in raw:
        return "vllm"
    return ""


def metrics(raw: dict[str, Any]) -> dict[str, float | None]:
    """The shared metrics of one result object (None where the file has no figure). A figure
    that is not a finite number >= 0 (a share above 1, a count with a fraction, a latency past
    MAX_S), percentiles out of order (p50 above p99) and more requests completed than made
    are ConfigErrors naming the field."""
    out: dict[str, float | None] = dict.fromkeys(m for m, _ in METRICS)
    src: dict[str, str] = {}  # the field of the file each figure came from, for errors

    def put(key: str, field: str, value: float | None) -> None:
        out[key] = value
        src[key] = field

    if "mean_ttft_ms" in raw:  # vLLM's names (bench writes them too)
        for name, ours in (("ttft", "ttft"), ("tpot", "tpot"), ("itl", "itl"), ("e2el", "e2e")):
            for stat, theirs in (
                ("mean", "mean"),
                ("p50", "median"),
                ("p90", "p90"),
                ("p99", "p99"),
            ):
                key = f"{theirs}_{name}_ms"
                put(f"{ours}_{stat}_s", key, _ms(raw, key))
    if "mean_ttft_ms" in raw or "request_throughput" in raw:
        for ours, theirs in (
            ("request_throughput", "request_throughput"),
            ("output_throughput", "output_throughput"),
            ("output_tokens", "total_output_tokens"),
            ("completed", "completed"),
            ("failed", "failed"),
        ):
            put(ours, theirs, _num(raw, theirs))
        if out["completed"] is not None:
            out["requests"] = _finite(out["completed"] + (out["failed"] or 0.0))
    for ours in ("ttft", "tpot", "e2e"):  # simulate's names fill what is still missing
        pct = raw.get(f"{ours}_s")
        if pct is not None and not isinstance(pct, dict):
            raise ConfigError(f"must be {{p50, p90, p99}}, got {_show(pct)}", field=f"{ours}_s")
        for p in (50, 90, 99):
            key = f"{ours}_p{p}_s"
            if pct is not None and out.get(key) is None:
                put(key, f"{ours}_s.p{p}", seconds(pct.get(f"p{p}"), f"{ours}_s.p{p}"))
    for key, field in (
        ("requests", "requests"),
        ("completed", "completed"),
        ("failed", "rejected"),
        ("output_tokens", "output_tokens"),
        ("output_throughput", "output_tokens_per_s"),
        ("slo_attainment", "slo_attainment"),
        ("energy_j_per_token", "energy_j_per_token"),
        ("usd_per_mtok", "usd_per_mtok"),
    ):
        if out[key] is None:
            put(key, field, _num(raw, field))
    span = _num(raw, "span_s")
    if out["request_throughput"] is None and span and out["completed"] is not None:
        out["request_throughput"] = _finite(out["completed"] / span)
    _consistent(out, src)
    return out


def _consistent(out: dict[str, float | None], src: dict[str, str]) -> None:
    """Figures that contradict each other: a percentile below a lower one, more requests
    completed (or completed and refused) than made."""
    for ours in ("ttft", "tpot", "itl", "e2e"):
        known = [(k, v) for p in (50, 90, 99) if (v := out[k := f"{ours}_p{p}_s"]) is not None]
        for (low_key, low), (high_key, high) in pairwise(known):
            if low > high * (1 + 1e-9):  # not a rounding of one interpolation
                raise ConfigError(
                    f"{high:.6g} s is below {src[low_key]} ({low:.6g} s): a higher percentile "
                    "is never lower (a file edited?)",
                    field=src[high_key],
                )
    made, done, failed = out["requests"], out["completed"], out["failed"]
    if made is None or done is None:
        return
    if done > made:
        raise ConfigError(
            f"{done:.0f} requests completed, more than the {made:.0f} made "
            f"({src.get('requests', 'requests')})",
            field=src["completed"],
        )
    if failed is not None and done + failed > made:
        raise ConfigError(
            f"{failed:.0f} failed and {done:.0f} completed of {made:.0f} requests made",
            field=src["failed"],
        )


class Timed(NamedTuple):
    """One completed request's latencies and lengths (tokens; None where the file gives
    none), with the keys it pairs by."""

    row: int  # its line in the trace (0: unknown or generated)
    id: int  # its place in the workload
    ttft_s: float | None
    tpot_s: float | None
    e2e_s: float | None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    target: str | None = None  # where it ran: a replica (deployment/index) or hosted API


# bench's (and vLLM's) lists, one entry per request, checked against `ttfts`
REQUEST_LISTS = (
    "e2els",
    "input_lens",
    "output_lens",
    "errors",
    "trace_rows",
    "itls",
    "request_backends",
)


def _twice(keys: list[int], *, zero_too: bool = False) -> tuple[int, int, int] | None:
    """The first key listed twice, with the places of both (0-based). A trace row of 0
    (a generated request) is no key, so 0 repeats freely unless `zero_too`."""
    seen: dict[int, int] = {}
    for i, k in enumerate(keys):
        if (k or zero_too) and k in seen:
            return k, seen[k], i
        seen.setdefault(k, i)
    return None


def _records(records: list[RequestRecord]) -> list[Timed]:
    """A requests file's completed requests. A trace row or an id on two lines (a line
    repeated, two files joined) is a ConfigError: it would pair one request twice."""
    for key, what in (("row", "trace row"), ("id", "request id")):
        dup = _twice([getattr(r, key) for r in records], zero_too=key == "id")
        if dup is not None:
            raise ConfigError(
                f"{what} {dup[0]} is on two lines (request lines {dup[1] + 1} and "
                f"{dup[2] + 1}): a requests file holds one line per request; was a line "
                "repeated, or two files joined?",
                field=key,
            )
    return [
        Timed(r.row, r.id, r.ttft_s, r.tpot_s, r.e2e_s, r.prompt_tokens, r.output_tokens, r.target)
        for r in records
        if r.status == OK
    ]


def per_request(raw: dict[str, Any]) -> list[Timed]:
    """The completed requests of a result: `simulate --requests-out` records, or bench's
    lists (`ttfts`, `e2els`, `input_lens`, `output_lens`, `errors`, `trace_rows`, `itls`), or
    vLLM's by position; failed requests are left out. What a requests file's reader refuses
    is refused here too, naming the entry (`ttfts[3]`): a listed latency or length that is not
    a number >= 0, a latency past MAX_S, an end before the first token; so is a list whose
    length is not that of `ttfts`, a trace row listed twice, and more requests `completed`
    than the lists hold without an error."""
    records = raw.get("records")
    if isinstance(records, list) and records and isinstance(records[0], RequestRecord):
        return _records(records)
    ttfts = raw.get("ttfts")
    if not isinstance(ttfts, list):
        return []
    n = len(ttfts)
    for key in REQUEST_LISTS:
        v = raw.get(key)
        if v is not None and not isinstance(v, list):
            raise ConfigError(f"must be a list, one entry per request, got {_show(v)}", field=key)
        if v is not None and len(v) != n:
            raise ConfigError(
                f"lists {len(v)} requests where ttfts lists {n}: one entry per request in "
                "every list (a file cut short or edited?)",
                field=key,
            )

    def column(key: str, fill: Any) -> list[Any]:
        v = raw.get(key)
        return v if isinstance(v, list) else [fill] * n

    rows, e2es, ins, outs, errs, backends, itls = (
        column(k, f)
        for k, f in (
            ("trace_rows", 0),
            ("e2els", None),
            ("input_lens", None),
            ("output_lens", None),
            ("errors", ""),
            ("request_backends", None),
            ("itls", []),
        )
    )
    rows = [int(figure(r, f"trace_rows[{i}]", whole=True) or 0) for i, r in enumerate(rows)]
    dup = _twice(rows)
    if dup is not None:
        raise ConfigError(
            f"row {dup[0]} is listed twice (entries {dup[1]} and {dup[2]}): one entry per "
            "request of the trace",
            field="trace_rows",
        )
    out = []
    for i, (row, t, e, p, tokens, err, backend, gaps) in enumerate(
        zip(rows, ttfts, e2es, ins, outs, errs, backends, itls, strict=True)
    ):
        if err:
            continue
        # vLLM writes 0 for a latency it has not: 0 is no figure
        ttft = seconds(t, f"ttfts[{i}]")
        e2e = seconds(e, f"e2els[{i}]")
        if ttft and e2e is not None and e2e < ttft:
            raise ConfigError(
                f"{e2e} is below ttfts[{i}] ({ttft}): a request ends after its first token",
                field=f"e2els[{i}]",
            )
        _gaps(gaps, i)
        prompt = figure(p, f"input_lens[{i}]", whole=True)
        count = figure(tokens, f"output_lens[{i}]", whole=True)
        per_token = per_token_s(ttft or None, e2e or None, int(count or 0))
        out.append(
            Timed(
                row,
                i,
                ttft or None,
                per_token,
                e2e or None,
                None if prompt is None else int(prompt),
                None if count is None else int(count),
                backend if isinstance(backend, str) else None,
            )
        )
    done = figure(raw.get("completed"), "completed", whole=True)
    if done is not None and done > len(out):
        raise ConfigError(
            f"{done:.0f} requests completed where ttfts lists {n}, {len(out)} of them without "
            "an error: one entry per request (a file cut short or edited?)",
            field="completed",
        )
    return out


def _gaps(gaps: Any, i: int) -> None:
    """`itls[i]`: a completed request's gaps between tokens, each a latency (seconds)."""
    if not isinstance(gaps, list):
        raise ConfigError(
            f"must be a list of the gaps between tokens (s), got {_show(gaps)}",
            field=f"itls[{i}]",
        )
    # the common case at C speed (a NaN fails both comparisons); the first bad one named
    if all(type(g) in (float, int) and 0 <= g <= MAX_S for g in gaps):
        return
    for j, g in enumerate(gaps):
        if seconds(g, f"itls[{i}][{j}]") is None:
            raise ConfigError("must be a number, got None", field=f"itls[{i}][{j}]")


class Pairing(NamedTuple):
    """Which completed requests of A and B are the same request: by trace row when both
    files give every request one, else by place in the workload."""

    by: str  # "trace row" or "position"
    pairs: list[tuple[Timed, Timed]]
    only_a: int  # completed in A, with no completed request of B at its key
    only_b: int

    @property
    def targets(self) -> tuple[int, int] | None:
        """Of the pairs whose files both say where the request ran (bench against wattserve,
        simulate --requests-out): how many ran on the same target, and how many on another;
        None where no pair says."""
        both = [(x.target, y.target) for x, y in self.pairs if x.target and y.target]
        if not both:
            return None
        same = sum(x == y for x, y in both)
        return same, len(both) - same

    def summary(self) -> dict[str, Any]:
        targets = self.targets
        return {
            "by": self.by,
            "pairs": len(self.pairs),
            "only_in_a": self.only_a,
            "only_in_b": self.only_b,
            "same_target": None if targets is None else targets[0],
            "other_target": None if targets is None else targets[1],
        }


def _keys(timed: list[Timed]) -> bool:
    """Whether every request carries its own trace row (else requests pair by position)."""
    rows = [t.row for t in timed]
    return bool(rows) and all(r > 0 for r in rows) and len(set(rows)) == len(rows)


def pair(a: list[Timed], b: list[Timed]) -> Pairing:
    """The requests of A and B with the same key (trace row, or place in the workload)."""
    by_row = _keys(a) and _keys(b)
    ka = {t.row if by_row else t.id: t for t in a}
    kb = {t.row if by_row else t.id: t for t in b}
    common = sorted(ka.keys() & kb.keys())
    return Pairing(
        "trace row" if by_row else "position",
        [(ka[k], kb[k]) for k in common],
        len(ka) - len(common),
        len(kb) - len(common),
    )


# Lengths that say two requests are not the same request. bench sizes each prompt from a line
# fitted to the server's own counts on two probes and rounds it to whole words, so a prompt of
# the same trace row lands within a token or two of the trace's length (a tokenizer that splits
# an odd word adds a few on long prompts): 4 tokens or 5 % is a wide margin for that, and far
# below what two traces differ by. A server may also count every prompt a fixed number of
# tokens apart from the trace (a chat template counted or not: `wattserve serve`'s streamed
# usage is 28 tokens under llama.cpp's with SmolLM2), so prompts are held against each other
# after the pairs' median shift; two traces shift them by unrelated amounts. Outputs may
# legitimately fall short of the trace (a server that stops at end-of-sequence when it refused
# ignore_eos, or one counted by chunks), so they only ever warn.
LENGTH_TOL_TOKENS = 4
LENGTH_TOL_SHARE = 0.05
DIFFERENT_TRACES_SHARE = 0.1  # prompts disagree on more pairs than this: different traces


def _tolerance(n: float, m: float) -> float:
    return max(LENGTH_TOL_TOKENS, LENGTH_TOL_SHARE * max(n, m))


class LengthCheck(NamedTuple):
    """The pairs with both lengths known, how many of them disagree (prompts: beyond the
    shift common to the pairs), the first that does, and that shift (median B - A, tokens)."""

    name: str  # "prompt" or "output"
    checked: int
    disagree: int
    example: str  # the pair furthest off: "row 2: 135 against 98 tokens"
    shift: float = 0.0
    shifted: bool = False  # the shift itself is past the tolerance

    def message(self) -> str:
        beyond = ", even with the same shift allowed to every pair" if self.shift else ""
        return (
            f"{self.name} lengths disagree on {self.disagree} of {self.checked} pairs{beyond} "
            f"(furthest: {self.example}; within {LENGTH_TOL_TOKENS} tokens or "
            f"{100 * LENGTH_TOL_SHARE:.0f} % is the same)"
        )

    @property
    def different_traces(self) -> bool:
        """Whether the prompts say the two files ran different traces."""
        return self.name == "prompt" and self.disagree > DIFFERENT_TRACES_SHARE * self.checked


def lengths(pairing: Pairing) -> list[LengthCheck]:
    """The prompt and output lengths of each pair held against each other."""
    checks = []
    for name in ("prompt", "output"):
        field = f"{name}_tokens"
        both = [
            (x, getattr(x, field), getattr(y, field))
            for x, y in pairing.pairs
            if getattr(x, field) is not None and getattr(y, field) is not None
        ]
        shift, shifted = 0.0, False
        if name == "prompt" and both:
            shift = float(np.median([m - n for _, n, m in both]))
            longest = float(np.median([max(n, m) for _, n, m in both]))
            shifted = abs(shift) > _tolerance(longest, longest)
        off = [(x, n, m) for x, n, m in both if abs(m - n - shift) > _tolerance(n, m)]
        example = ""
        if off:  # the pair furthest off
            x, n, m = max(off, key=lambda o: abs(o[2] - o[1] - shift))
            key = f"row {x.row}" if pairing.by == "trace row" else f"request {x.id}"
            example = f"{key}: {n} against {m} tokens"
        checks.append(LengthCheck(name, len(both), len(off), example, shift, shifted))
    return checks


def paired(a: list[Timed], b: list[Timed]) -> list[dict[str, Any]]:
    """Request by request (the same trace row in both files, or the same place in the
    workload when either file has no rows): the spread of B - A per latency."""
    return spread(pair(a, b))


def spread(pairing: Pairing) -> list[dict[str, Any]]:
    """Per latency, the pairs' B - A: median and p90 of |B - A|, median error and median
    |error|, as interpolated percentiles (`bench.metrics.percentiles`, as every figure)."""
    rows = []
    for name in ("ttft_s", "tpot_s", "e2e_s"):
        pairs = [(getattr(x, name), getattr(y, name)) for x, y in pairing.pairs]
        pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
        if not pairs:
            continue
        absd = [abs(y - x) for x, y in pairs]
        # a tiny A can put the error past what a float holds: that pair has no error
        rels = [r for x, y in pairs if x and math.isfinite(r := (y - x) / x)]
        spread = {k: _finite(v) for k, v in percentiles(absd).items()}
        rows.append(
            {
                "metric": name,
                "pairs": len(pairs),
                "by": pairing.by,
                "median_abs_diff_s": spread["p50"],
                "p90_abs_diff_s": spread["p90"],
                "median_error": _finite(percentiles(rels)["p50"]),
                "median_abs_error": _finite(percentiles([abs(r) for r in rels])["p50"]),
            }
        )
    return rows


def records_result(records: list[RequestRecord]) -> dict[str, Any]:
    """A requests file as a result object: the figures of its completed requests under
    bench's names (vLLM's), and the records themselves for pairing."""
    done = [r for r in records if r.status == OK]
    ttfts = [t for r in done if (t := r.ttft_s) is not None]
    tpots = [t for r in done if (t := r.tpot_s) is not None]
    e2es = [t for r in done if (t := r.e2e_s) is not None]
    span = max((r.end_s or 0.0 for r in done), default=0.0)
    out_tokens = sum(r.output_tokens for r in done)
    raw: dict[str, Any] = {
        "tool": "wattserve requests",
        "completed": len(done),
        "failed": len(records) - len(done),
        "total_output_tokens": out_tokens,
        "request_throughput": _finite(len(done) / span) if span else None,
        "output_throughput": _finite(out_tokens / span) if span else None,
        "ttft_s": percentiles(ttfts),
        "tpot_s": percentiles(tpots),
        "e2e_s": percentiles(e2es),
        "records": records,
    }
    for name, values in (("ttft", ttfts), ("tpot", tpots), ("e2el", e2es)):
        raw.update(latency_stats(name, values))
    return raw


def compare(a: dict[str, float | None], b: dict[str, float | None]) -> list[dict[str, Any]]:
    """One row per metric both files have: A, B, B - A and (B - A) / A."""
    rows = []
    for name, unit in METRICS:
        x, y = a.get(name), b.get(name)
        if x is None and y is None:
            continue
        diff = None if x is None or y is None else _finite(y - x)
        err = None if diff is None or not x else _finite(diff / abs(x))
        rows.append({"metric": name, "unit": unit, "a": x, "b": y, "diff": diff, "error": err})
    return rows


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "s" and abs(v) < 1e6:
        return f"{v * 1e3:.2f} ms" if abs(v) < 1 else f"{v:.3f} s"
    if unit == "" and float(v).is_integer() and abs(v) < 1e15:
        return f"{v:.0f}"
    return f"{v:.4g}" + (f" {unit}" if unit else "")


def _pct(error: float | None, sign: str = "+") -> str:
    """An error as a percentage; one past a million percent in three digits (a tiny A), not a
    line of hundreds. A percentage too large for a float is '-', as an error too large for
    one is (until 2026-12-07 an error past 1.8e306 printed `+inf %`)."""
    v = None if error is None else _finite(100 * error)
    if v is None:
        return "-"
    return f"{v:{sign}.1f} %" if abs(v) < 1e6 else f"{v:{sign}.3g} %"


def table(rows: list[dict[str, Any]], label_a: str, label_b: str) -> str:
    head = f"{'metric':22} {label_a[:18]:>18} {label_b[:18]:>18} {'B - A':>14} {'error':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        err = _pct(r["error"])
        lines.append(
            f"{r['metric']:22} {_fmt(r['a'], r['unit']):>18} {_fmt(r['b'], r['unit']):>18} "
            f"{_fmt(r['diff'], r['unit']):>14} {err:>9}"
        )
    return "\n".join(lines)


def paired_table(rows: list[dict[str, Any]], pairing: Pairing) -> str:
    """The request-by-request section: how many requests paired and which did not, then
    one row per latency (or a line saying no request paired)."""
    if not pairing.pairs:
        return (
            f"request by request: no request pairs ({pairing.only_a} completed requests in A, "
            f"{pairing.only_b} in B, none at the same {pairing.by} in the other)"
        )
    head = (
        f"{'per request':14} {'pairs':>7} {'median |B-A|':>14} {'p90 |B-A|':>14} "
        f"{'median error':>13} {'median |error|':>15}"
    )
    lines = [
        f"request by request (paired by {pairing.by}): error = (B - A) / A",
        f"{len(pairing.pairs)} pairs; {pairing.only_a} completed requests only in A, "
        f"{pairing.only_b} only in B (failed in the other file, or not in it)",
        *(
            []
            if (targets := pairing.targets) is None
            else [f"{targets[0]} ran on the same target in both, {targets[1]} on another"]
        ),
        head,
        "-" * len(head),
    ]
    for r in rows:
        err, abs_err = _pct(r["median_error"]), _pct(r["median_abs_error"], "-")
        lines.append(
            f"{r['metric']:14} {r['pairs']:>7} {_fmt(r['median_abs_diff_s'], 's'):>14} "
            f"{_fmt(r['p90_abs_diff_s'], 's'):>14} {err:>13} {abs_err:>15}"
        )
    return "\n".join(lines)
