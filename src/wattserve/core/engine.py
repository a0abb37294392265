"""EngineModel: a continuous-batching engine as vLLM runs one, timed by the PerfModel.

Each step the scheduler gives every running decode sequence one token, continues chunked
prefills, then admits waiting requests while the token budget (`max_batched_tokens`), the
sequence limit (`max_num_seqs`) and free KV-cache blocks allow. When a decode step cannot get
a block, the most recently admitted sequence is preempted (its cache freed, recomputed later),
as vLLM's recompute preemption does.

Between arrivals and completions nothing changes but context lengths, so a run of pure decode
steps is advanced in one go with `decode_run` (exact sums); `exact=True` steps one iteration
at a time instead. Both give the same times and energy: tests check it.

The engine owns no clock: the caller (the simulator, or the gateway on the wall clock) says
when things happen and asks when the current work ends.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from wattserve.core.perf import PerfModel, decode_run, decode_run_time
from wattserve.core.workload import Request

BLOCK = 16  # KV-cache block size in tokens (vLLM default)


def _blocks(tokens: int) -> int:
    return -(-tokens // BLOCK)


class Seq:
    """A request inside an engine: how much of it is in the KV cache and how much generated."""

    __slots__ = (
        "blocks",
        "computed",
        "first_token_s",
        "generated",
        "preemptions",
        "prefill_target",
        "prefilling",
        "priority",
        "req",
        "tag",
    )

    def __init__(self, req: Request, tag: object = None, priority: float = 0.0) -> None:
        self.req = req
        self.tag = tag  # owner's handle (the simulator's or the gateway's record)
        self.priority = priority  # lower runs first under priority scheduling
        self.computed = 0
        self.generated = 0
        self.blocks = 0
        self.prefilling = True
        self.prefill_target = req.prompt_tokens
        self.first_token_s: float | None = None
        self.preemptions = 0


@dataclass
class StepPlan:
    """What the engine does from `start_s` to `end_s`: one mixed step, or `steps` decodes."""

    start_s: float
    end_s: float
    energy_j: float
    power_w: float
    chunks: list[tuple[Seq, int]] = field(default_factory=list)
    decodes: list[Seq] = field(default_factory=list)
    steps: int = 1
    kv0: float = 0.0


@dataclass
class StepResult:
    first_tokens: list[Seq]
    finished: list[Seq]
    rejected: list[Seq]


class EngineModel:
    """One engine replica (tp x pp devices) with vLLM-like continuous batching."""

    def __init__(
        self,
        name: str,
        perf: PerfModel,
        kv_blocks: int,
        *,
        exact: bool = False,
        priority: bool = False,
    ) -> None:
        dep = perf.deployment
        self.name = name
        self.index = -1  # the owner's handle for this replica
        self.perf = perf
        self.exact = exact
        self.priority = priority  # vLLM's --scheduling-policy priority: lower value first
        self.max_seqs = dep.max_num_seqs
        self.max_tokens = dep.max_batched_tokens
        self.total_blocks = kv_blocks
        self.used_blocks = 0
        self.waiting: deque[Seq] = deque()
        self.running: list[Seq] = []
        self.idle_w = perf.idle_power_w
        self.plan: StepPlan | None = None
        self.outstanding = 0
        self.pending_prefill = 0  # tokens still to prefill, queued or in progress
        self.busy_s = 0.0
        self.busy_energy_j = 0.0
        self.preemptions = 0
        self.steps = 0

    # -- state the routing view reads ------------------------------------------------------

    @property
    def power_w(self) -> float:
        return self.plan.power_w if self.plan is not None else self.idle_w

    @property
    def batch(self) -> int:
        return len(self.running)

    def submit(self, seq: Seq) -> None:
        waiting = self.waiting
        if self.priority and waiting and waiting[-1].priority > seq.priority:
            i = len(waiting)
            while i > 0 and waiting[i - 1].priority > seq.priority:
                i -= 1
            waiting.insert(i, seq)
        else:
            waiting.append(seq)
        self.outstanding += 1
        self.pending_prefill += seq.prefill_target

    # -- scheduling ------------------------------------------------------------------------

    def _preempt_last(self) -> None:
        s = self.running.pop()
        self.used_blocks -= s.blocks
        s.blocks = 0
        s.computed = 0
        s.prefilling = True
        s.prefill_target = s.req.prompt_tokens + s.generated
        s.preemptions += 1
        self.preemptions += 1
        self.pending_prefill += s.prefill_target
        self.waiting.appendleft(s)

    def next_plan(self, now: float, admit: bool = True) -> tuple[StepPlan | None, list[Seq]]:
        """Schedule the next step (or run of decode steps) starting at `now`.

        Returns the plan (None when there is nothing to do) and the requests that can never
        run here (a prompt larger than the whole KV cache).
        """
        rejected: list[Seq] = []
        free = self.total_blocks - self.used_blocks
        decodes = [s for s in self.running if not s.prefilling]
        need = sum(_blocks(s.computed + 1) - s.blocks for s in decodes)
        while need > free and self.running:
            self._preempt_last()
            free = self.total_blocks - self.used_blocks
            decodes = [s for s in self.running if not s.prefilling]
            need = sum(_blocks(s.computed + 1) - s.blocks for s in decodes)
        free -= need
        budget = self.max_tokens - len(decodes)
        chunks: list[tuple[Seq, int]] = []
        for s in self.running:
            if not s.prefilling or budget <= 0:
                continue
            q, free = self._chunk(s, budget, free)
            if q == 0:
                break
            chunks.append((s, q))
            budget -= q
        while admit and self.waiting and len(self.running) < self.max_seqs and budget > 0:
            s = self.waiting[0]
            if _blocks(s.prefill_target) > self.total_blocks:
                self.waiting.popleft()
                self.outstanding -= 1
                self.pending_prefill -= s.prefill_target
                rejected.append(s)
                continue
            q, free = self._chunk(s, budget, free)
            if q == 0:
                break
            self.waiting.popleft()
            self.running.append(s)
            chunks.append((s, q))
            budget -= q
        if not chunks and not decodes:
            return None, rejected
        if not chunks and not self.exact:
            return self._decode_run(now, decodes, free + need), rejected
        return self._mixed(now, chunks, decodes), rejected

    def _chunk(self, s: Seq, budget: int, free: int) -> tuple[int, int]:
        """Tokens of `s` to prefill this step within `budget` and `free` blocks."""
        q = min(s.prefill_target - s.computed, budget)
        room = (s.blocks + free) * BLOCK - s.computed
        q = min(q, room)
        if q <= 0:
            return 0, free
        return q, free - (_blocks(s.computed + q) - s.blocks)

    def _mixed(self, now: float, chunks: list[tuple[Seq, int]], decodes: list[Seq]) -> StepPlan:
        tokens = attn = kv = 0.0
        for s, q in chunks:
            c = s.computed
            tokens += q
            attn += q * c + q * (q + 1) / 2
            kv += c + q
            new = _blocks(c + q)
            self.used_blocks += new - s.blocks
            s.blocks = new
        for s in decodes:
            tokens += 1
            attn += s.computed + 1
            kv += s.computed + 1
            new = _blocks(s.computed + 1)
            self.used_blocks += new - s.blocks
            s.blocks = new
        cost = self.perf.step(tokens, attn, kv, len(chunks) + len(decodes))
        return StepPlan(now, now + cost.time_s, cost.energy_j, cost.power_w, chunks, decodes)

    def _decode_run(self, now: float, decodes: list[Seq], free: int) -> StepPlan:
        steps = min(s.req.output_tokens - s.generated for s in decodes)

        # largest n <= steps whose KV growth fits in the free blocks
        def grow(n: int) -> int:
            return sum(_blocks(s.computed + n) - s.blocks for s in decodes)

        if grow(steps) > free:
            lo, hi = 1, steps
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if grow(mid) <= free:
                    lo = mid
                else:
                    hi = mid - 1
            steps = lo
        kv0 = float(sum(s.computed + 1 for s in decodes))
        return self._run_plan(now, decodes, kv0, steps)

    def _run_plan(self, now: float, decodes: list[Seq], kv0: float, steps: int) -> StepPlan:
        run = decode_run(self.perf, len(decodes), kv0, steps)
        for s in decodes:
            new = _blocks(s.computed + steps)
            self.used_blocks += new - s.blocks
            s.blocks = new
        return StepPlan(
            now, now + run.time_s, run.energy_j, run.max_power_w, [], decodes, steps, kv0
        )

    def start(self, plan: StepPlan) -> None:
        self.plan = plan

    def steps_done(self, now: float) -> int:
        """Decode steps of the current run already finished at `now` (0 outside a run)."""
        p = self.plan
        if p is None or p.steps <= 1 or p.chunks or now <= p.start_s:
            return 0
        lo, hi = 0, p.steps
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if p.start_s + decode_run_time(self.perf, len(p.decodes), p.kv0, mid) <= now:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def shorten(self, now: float) -> float | None:
        """Cut a running decode run at the first step boundary at or after `now` so that a
        new arrival can join the next step. Returns the new end time, or None if unchanged."""
        p = self.plan
        if p is None or p.steps <= 1 or p.chunks or now >= p.end_s:
            return None
        s = len(p.decodes)
        lo, hi = 1, p.steps
        while lo < hi:
            mid = (lo + hi) // 2
            if p.start_s + decode_run_time(self.perf, s, p.kv0, mid) >= now:
                hi = mid
            else:
                lo = mid + 1
        if lo >= p.steps:
            return None
        for q in p.decodes:  # give back blocks reserved for the dropped steps
            new = _blocks(q.computed + lo)
            self.used_blocks += new - q.blocks
            q.blocks = new
        self.plan = self._run_plan(p.start_s, p.decodes, p.kv0, lo)
        self.plan.power_w = p.power_w  # the reservation made at start stands until the end
        return self.plan.end_s

    def complete(self, now: float) -> StepResult:
        """Apply the current plan's effects at its end time `now`."""
        p = self.plan
        assert p is not None
        self.plan = None
        self.busy_s += p.end_s - p.start_s
        self.busy_energy_j += p.energy_j
        self.steps += p.steps
        first: list[Seq] = []
        done: list[Seq] = []
        for s, q in p.chunks:
            s.computed += q
            self.pending_prefill -= q
            if s.computed >= s.prefill_target:
                s.prefilling = False
                s.generated += 1
                if s.first_token_s is None:
                    s.first_token_s = now
                    first.append(s)
                if s.generated >= s.req.output_tokens:
                    done.append(s)
        n = p.steps
        for s in p.decodes:
            s.computed += n
            s.generated += n
            if s.generated >= s.req.output_tokens:
                done.append(s)
        if done:
            finished = set(map(id, done))
            self.running = [s for s in self.running if id(s) not in finished]
            for s in done:
                self.used_blocks -= s.blocks
                s.blocks = 0
            self.outstanding -= len(done)
        return StepResult(first, done, [])

    def energy_j(self, span_s: float) -> float:
        """Busy energy plus idle power over the rest of `span_s`."""
        return self.busy_energy_j + self.idle_w * max(0.0, span_s - self.busy_s)
