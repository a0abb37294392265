"""Session 37's review of `bench`'s figures, against scripted OpenAI-compatible servers on real
sockets (serving.ThreadedApp): a reasoning model's stream (its thoughts in
`reasoning_content`) was timed from its answer; a whole answer without usage counted one token
whatever its length, and said nothing; requests still waiting for a --concurrency slot when
the run was interrupted were counted failed; a --no-stream request past --timeout was a
`disconnected`; whole answers (no first token) gave a goodput of 0 rather than unknown; a class
the workload does not define was held to the built-in limits whatever --ttft-slo said; a
partial sum of the server's grams was given as the whole; --duration with --request-rate cut
on the trace's times, not the Poisson ones."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web
from serving import ThreadedApp, write_trace
from typer.testing import CliRunner

from wattserve.bench import BenchOptions, replay, summarize
from wattserve.bench.client import Result
from wattserve.cli.app import app
from wattserve.core.workload import SLO, load_workload


class Scripted(ThreadedApp):
    """A server whose chat answer is scripted by the test: `reasoning` and `answer` tokens
    streamed `gap_s` apart (thoughts in `reasoning_content`, as vLLM's reasoning parsers send
    them), or a whole answer of `text` without usage, after `delay_s`."""

    def __init__(self, reasoning: int = 0, answer: int = 3, gap_s: float = 0.02) -> None:
        super().__init__(
            [web.post("/v1/chat/completions", self._chat), web.get("/v1/models", self._models)]
        )
        self.reasoning, self.answer, self.gap_s = reasoning, answer, gap_s
        self.text, self.delay_s = "x" * 40, 0.0

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body.get("max_tokens") == 1:  # the prompt-length probes: a counted prompt
            usage = {"prompt_tokens": 8, "completion_tokens": 1}
            choice = {"index": 0, "message": {"role": "assistant", "content": "a"}}
            return web.json_response({"choices": [choice], "usage": usage})
        await asyncio.sleep(self.delay_s)
        if not body.get("stream"):
            choice = {"index": 0, "message": {"role": "assistant", "content": self.text}}
            return web.json_response({"choices": [{**choice, "finish_reason": "stop"}]})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def send(obj: dict[str, Any]) -> None:
            await resp.write(b"data: " + json.dumps(obj).encode() + b"\n\n")

        await send({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
        parts = [("reasoning_content", f" r{i}") for i in range(self.reasoning)]
        parts += [("content", f" a{i}") for i in range(self.answer)]
        for field, text in parts:
            await asyncio.sleep(self.gap_s)
            await send({"choices": [{"index": 0, "delta": {field: text}}]})
        await send({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
        n = self.reasoning + self.answer
        await send({"choices": [], "usage": {"prompt_tokens": 8, "completion_tokens": n}})
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


def _trace(tmp_path: Path, n: int, every_s: float = 0.0) -> Path:
    rows = [{"arrival_s": i * every_s, "prompt_tokens": 50, "output_tokens": 8} for i in range(n)]
    return write_trace(tmp_path / "t.jsonl", rows)


def _replay(trace: Path, opts: BenchOptions) -> Any:
    wl = load_workload(trace, default_model="")
    run = asyncio.run(replay(wl, opts))
    return run, summarize(run.results, run.duration_s, wl.slos)


def test_a_reasoning_models_thoughts_are_its_first_tokens(tmp_path: Path) -> None:
    with Scripted(reasoning=10, answer=3) as s:
        _, got = _replay(_trace(tmp_path, 1), BenchOptions(url=f"http://127.0.0.1:{s.port}"))
    assert got["completed"] == 1, got["errors_by_kind"]
    assert got["ttft_s"]["p50"] < 0.15  # the first thought, not the first answer token
    assert len(got["itls"][0]) == 12  # every gap between the 13 tokens
    with Scripted(reasoning=5, answer=0) as s:  # all thoughts, no answer: not `empty`
        _, got = _replay(_trace(tmp_path, 1), BenchOptions(url=f"http://127.0.0.1:{s.port}"))
    assert got["completed"] == 1 and got["failed"] == 0, got["errors_by_kind"]


def test_a_whole_answer_without_usage_is_counted_by_its_text_and_said_so(tmp_path: Path) -> None:
    with Scripted() as s:
        opts = BenchOptions(url=f"http://127.0.0.1:{s.port}", stream=False, exact_output="off")
        run, got = _replay(_trace(tmp_path, 2), opts)
    assert got["output_lens"] == [10, 10]  # 40 characters, 4 a token (it had been 1 each)
    assert any("counted by the client" in n for n in run.notes), run.notes
    # no first token to judge: unknown, not 0
    assert got["request_goodput"] is None and got["slo_attainment"] is None


def test_a_no_stream_request_past_the_timeout_is_a_timeout(tmp_path: Path) -> None:
    with Scripted() as s:
        s.delay_s = 3.0
        opts = BenchOptions(
            url=f"http://127.0.0.1:{s.port}", stream=False, exact_output="off", timeout_s=1.0
        )
        _, got = _replay(_trace(tmp_path, 1), opts)
    assert got["errors_by_kind"] == {"timeout": 1}, got["errors_by_kind"]


def test_requests_waiting_for_a_slot_when_interrupted_were_not_sent(tmp_path: Path) -> None:
    wl = load_workload(_trace(tmp_path, 6), default_model="")

    async def interrupted(url: str) -> Any:
        task = asyncio.create_task(replay(wl, BenchOptions(url=url, concurrency=1)))
        await asyncio.sleep(1.0)  # the first is in flight, five wait for the slot
        task.cancel()
        return await task

    with Scripted() as s:
        s.delay_s = 3.0
        run = asyncio.run(interrupted(f"http://127.0.0.1:{s.port}"))
    got = summarize(run.results, run.duration_s, wl.slos)
    assert got["not_sent"] == 5 and got["requests"] == 1, got["errors_by_kind"]
    assert got["errors_by_kind"] == {"cancelled": 1}


def test_duration_with_a_request_rate_cuts_on_the_poisson_times(tmp_path: Path) -> None:
    trace = _trace(tmp_path, 30, every_s=1.0)  # 30 s of trace
    out = tmp_path / "r.json"
    with Scripted(answer=1, gap_s=0.0) as s:
        r = CliRunner().invoke(
            app,
            [
                "bench",
                "--url",
                f"http://127.0.0.1:{s.port}",
                "--trace",
                str(trace),
                "--request-rate",
                "100",
                "--duration",
                "5",
                "--out",
                str(out),
                "--no-progress",
            ],
        )
    assert r.exit_code == 0, r.output
    got = json.loads(out.read_text())
    # all 30 sent at 100/s (in about 0.3 s): the trace's own times had cut it to 5
    assert got["num_prompts"] == 30 and max(got["send_times_s"]) < 5.0


def _done(site: str, carbon_g: float | None, slo: str = "default") -> Result:
    r = Result(0, 0, 0.0, 10, 3, slo=slo, ok=True, ttft_s=2.5, e2e_s=2.6, site=site)
    r.backend, r.energy_j, r.carbon_g, r.usage_completion_tokens = f"{site}/0", 36.0, carbon_g, 3
    return r


def test_an_undefined_class_is_held_to_the_workloads_default() -> None:
    slos = {"default": SLO(10.0, 10.0)}  # as --ttft-slo 10 --tpot-slo 10 set it
    got = summarize([_done("dc", None), _done("dc", None, slo="batch")], 5.0, slos)
    assert got["slo_attainment"] == 1.0  # `batch` had been held to the built-in 2 s


def test_the_servers_grams_are_unknown_where_a_site_reported_none() -> None:
    got = summarize([_done("dc", 0.5), _done("edge", None)], 1.0, {"default": SLO()})
    assert got["gco2"] is None and "edge" in got["gco2_note"], got["gco2_note"]
    whole = summarize([_done("dc", 0.5), _done("dc", 0.25)], 1.0, {"default": SLO()})
    assert whole["gco2"] == 0.75
