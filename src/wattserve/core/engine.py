"""EngineModel: a continuous-batching engine as vLLM runs one, timed by the PerfModel.

Each step the scheduler gives every running decode sequence one token, continues chunked
prefills, then admits waiting requests while the token budget (`max_batched_tokens`), the
sequence limit (`max_num_seqs`) and free KV-cache blocks allow, each with its whole first
chunk or not at all (vLLM v1's `allocate_slots` for the chunk, else the queue waits). When a
decode step cannot get a block, the most recently admitted sequence is preempted (its cache
freed, recomputed later; under priority scheduling the lowest priority's latest arrival, queued
again at its priority's place), as vLLM's recompute preemption does, and, as vLLM v1's scheduler
does, a step that preempted admits no waiting request (unless it preempted every running one):
otherwise the sequence just preempted is admitted again in the same step, and the next step
preempts it again.

Between arrivals and completions nothing changes but context lengths, so a run of pure decode
steps is advanced in one go with `decode_run` (exact sums); `exact=True` steps one iteration
at a time instead. Both take the same decisions and give the same times and energy: a step
that preempted is taken alone, since the next one may admit again.

Decoding sequences advance together, so their progress is kept lazily against the engine's
decode clock (steps taken): a run of n steps is O(1), not O(batch). KV blocks are counted
exactly (ceil(tokens / 16) per sequence) and incrementally: a decoding sequence's blocks at
decode clock d are ceil((c0 - k0 + d) / 16), so the engine keeps, over decoding sequences, the
sum of (c0 - k0 + 15) // 16 and how many have each remainder (c0 - k0 + 15) % 16; the exact
total at any d is then O(1) however many sequences run (see `_decode_blocks`). Entries of
sequences that left decoding (preempted, aborted) are dropped from the finish heap when they
outnumber the live ones, so the heap stays within twice the running set.

The engine owns no clock: the caller (the simulator, or the gateway on the wall clock) says
when things happen and asks when the current work ends.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right, insort
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from wattserve.core.memory import KV_BLOCK_TOKENS
from wattserve.core.perf import (
    PerfModel,
    RunLines,
    decode_run,
    lines_steps_within,
    run_lines,
)
from wattserve.core.workload import Request

BLOCK = KV_BLOCK_TOKENS  # short name for the hot paths below
_NO_SEQS: list[Seq] = []  # returned, never mutated: "no requests rejected"


class Seq:
    """A request inside an engine. While prefilling, `computed` and `generated` are current;
    while decoding they are `c0`/`g0` at decode clock `k0` (see EngineModel.progress), and it
    finishes at decode clock `finish`."""

    __slots__ = (
        "admitted_s",
        "c0",
        "computed",
        "decoding",
        "finish",
        "first_token_s",
        "g0",
        "generated",
        "k0",
        "preemptions",
        "prefill_target",
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
        self.decoding = False
        self.c0 = self.g0 = self.k0 = self.finish = 0
        self.prefill_target = req.prompt_tokens
        self.first_token_s: float | None = None
        self.admitted_s: float | None = None  # first admission into the running batch
        self.preemptions = 0


@dataclass(slots=True)
class StepPlan:
    """What the engine does from `start_s` to `end_s`: one mixed step, or `steps` decodes."""

    start_s: float
    end_s: float
    energy_j: float
    power_w: float
    chunks: list[tuple[Seq, int]]
    decodes: int = 0
    steps: int = 1
    kv0: float = 0.0
    lines: RunLines | None = None  # a decode run's step costs as lines (perf.run_lines)
    throttled: bool = False  # slowed by a power cap (see PowerGovernor.throttle)


# What a completed plan did: (sequences that produced their first token, finished sequences).
# A plain tuple: one is made per simulator event.
StepResult = tuple[list[Seq], list[Seq]]


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
        self.waiting: deque[Seq] = deque()
        self.running: dict[int, Seq] = {}  # by id, in admission order (preemption: the last)
        self.prefilling = 0  # running sequences still prefilling
        self.prefill_blocks = 0  # blocks held by them
        self.clock = 0  # decode steps taken by decoding sequences
        self.n_decoding = 0
        self.kv_off = 0  # sum over decoding sequences of (c0 - k0)
        # the exact block count, incrementally (_decode_blocks): over decoding sequences, the
        # sum of (c0 - k0 + 15) // BLOCK, and how many have each (c0 - k0 + 15) % BLOCK
        self.kv_base_blocks = 0
        self.kv_rem_count = [0] * BLOCK
        # (finish clock, id, k0, seq); an entry is live while seq.decoding and seq.k0 == k0
        self.finish_heap: list[tuple[int, int, int, Seq]] = []
        self.finish_order: list[int] = []  # the live entries' finish clocks, sorted
        # Power unknown (no TDP in the catalog): steps are timed but draw "0 W" here, so that
        # sums stay finite; reports say which deployments have no power figures.
        self.power_known = not perf.power_missing
        self.idle_w = perf.idle_power_w if self.power_known else 0.0
        self.plan: StepPlan | None = None
        self.outstanding = 0
        self.pending_prefill = 0  # tokens still to prefill, queued or in progress
        self.busy_s = 0.0
        self.busy_energy_j = 0.0
        self.preemptions = 0
        self.steps = 0

    # -- state the routing view and the gateway read ---------------------------------------

    @property
    def power_w(self) -> float:
        return self.plan.power_w if self.plan is not None else self.idle_w

    @property
    def batch(self) -> int:
        return len(self.running)

    def progress(self, s: Seq) -> tuple[int, int]:
        """(tokens in the KV cache, tokens generated) of a sequence, now."""
        if s.decoding:
            d = self.clock - s.k0
            return s.c0 + d, s.g0 + d
        return s.computed, s.generated

    def remaining_output(self, rank: int) -> int | None:
        """Output tokens the `rank`-th soonest-finishing decoding sequence still has to
        produce (0: the soonest; past the last: the last), None when none is decoding. Routing
        asks this often, so the finish order is kept sorted as sequences come and go."""
        order = self.finish_order
        if not order:
            return None
        return order[min(rank, len(order) - 1)] - self.clock

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

    # -- KV blocks -------------------------------------------------------------------------

    def _decode_tokens(self, ahead: int) -> int:
        """Sum of KV tokens of decoding sequences `ahead` steps from now."""
        return self.kv_off + self.n_decoding * (self.clock + ahead)

    def _decode_blocks(self, ahead: int) -> int:
        """Exact blocks decoding sequences hold `ahead` steps from now, in O(BLOCK).

        With a = c0 - k0 + 15 = BLOCK * b + r and d = clock + ahead = BLOCK * q + e, a
        sequence holds ceil((c0 - k0 + d) / BLOCK) = (a + d) // BLOCK = b + q + (r + e >= BLOCK)
        blocks; summed: the kept sum of b, n * q, and the sequences whose r >= BLOCK - e."""
        q, e = divmod(self.clock + ahead, BLOCK)
        total = self.kv_base_blocks + self.n_decoding * q
        if e:
            total += sum(self.kv_rem_count[BLOCK - e :])
        return total

    def _count_blocks(self, s: Seq, sign: int) -> None:
        """Add (sign 1) or remove (-1) a decoding sequence from the exact block count."""
        b, r = divmod(s.c0 - s.k0 + BLOCK - 1, BLOCK)
        self.kv_base_blocks += sign * b
        self.kv_rem_count[r] += sign

    def _decode_steps_fitting(self, room: int, limit: int) -> int:
        """The most decode steps, 1 to `limit`, after which decoding sequences hold at most
        `room` blocks (1 when even one step does not fit): `_decode_blocks` inverted."""
        if self._decode_blocks(limit) <= room:
            return limit
        n = self.n_decoding
        spare = room - self.kv_base_blocks  # for n * q + (sequences with r >= BLOCK - e)
        if spare < 0:
            return 1
        q = spare // n
        counts = self.kv_rem_count
        e, extra = 0, 0
        while e < BLOCK - 1 and n * q + extra + counts[BLOCK - 1 - e] <= spare:
            e += 1
            extra += counts[BLOCK - e]
        return max(1, BLOCK * q + e - self.clock)

    # -- scheduling ------------------------------------------------------------------------

    def _leave_decoding(self, s: Seq) -> None:
        order = self.finish_order
        del order[bisect_right(order, s.finish) - 1]
        s.computed, s.generated = self.progress(s)
        s.decoding = False
        self.n_decoding -= 1
        self.kv_off -= s.c0 - s.k0
        self._count_blocks(s, -1)
        # its heap entry went stale; past one stale entry per live one, drop them all
        if len(self.finish_heap) > 2 * self.n_decoding + 32:
            self._drop_stale()

    def _drop_stale(self) -> None:
        """Rebuild the finish heap from its live entries, in place. Live entries are ordered
        totally (finish clock, then id), so the heap pops them in the same order as before."""
        heap = self.finish_heap
        heap[:] = [e for e in heap if e[3].decoding and e[3].k0 == e[2]]
        heapq.heapify(heap)

    def _enter_decoding(self, s: Seq) -> None:
        s.decoding = True
        s.c0, s.g0, s.k0 = s.computed, s.generated, self.clock
        self.n_decoding += 1
        self.kv_off += s.c0 - s.k0
        self._count_blocks(s, 1)
        finish = s.finish = self.clock + s.req.output_tokens - s.generated
        heapq.heappush(self.finish_heap, (finish, id(s), s.k0, s))
        insort(self.finish_order, finish)

    def _preempt_last(self) -> None:
        """Give way: the most recently admitted sequence, or under priority scheduling the
        lowest priority's latest arrival, back to the queue at its place (vLLM v1: the
        waiting queue's front, or its priority heap). Until 2026-12-06 priority scheduling
        too preempted the last admitted and queued it first, ahead of urgent requests."""
        if self.priority:
            # the last admitted of equal keys (max keeps the first it meets): arrivals tie
            victim = max(
                reversed(self.running.values()), key=lambda q: (q.priority, q.req.arrival_s)
            )
            s = self.running.pop(id(victim))
        else:
            s = self.running.popitem()[1]
        if s.decoding:
            self._leave_decoding(s)  # its heap entry goes stale
        else:  # what it still had to prefill leaves the queue's count, to come back whole
            self.prefilling -= 1
            self.prefill_blocks -= -(-s.computed // BLOCK)
            self.pending_prefill -= s.prefill_target - s.computed
        s.computed = 0
        s.prefill_target = s.req.prompt_tokens + s.generated
        s.preemptions += 1
        self.preemptions += 1
        self.pending_prefill += s.prefill_target
        waiting = self.waiting
        if self.priority:
            key = (s.priority, s.req.arrival_s)
            i = 0
            while i < len(waiting) and (waiting[i].priority, waiting[i].req.arrival_s) <= key:
                i += 1
            waiting.insert(i, s)
        else:
            waiting.appendleft(s)

    def next_plan(self, now: float) -> tuple[StepPlan | None, list[Seq]]:
        """Schedule the next step (or run of decode steps) starting at `now`.

        Returns the plan (None when there is nothing to do) and the requests that can never
        run here (a prompt and output larger than the whole KV cache).
        """
        if self.n_decoding and not self.prefilling and not self.waiting and not self.exact:
            # the common case between arrivals: every running sequence is decoding
            heap = self.finish_heap
            if not (heap[0][3].decoding and heap[0][3].k0 == heap[0][2]):
                self._clean_heap()
            n, clock = self.n_decoding, self.clock
            steps = heap[0][0] - clock
            if (self.kv_off + n * (clock + steps)) // BLOCK + n <= self.total_blocks:
                kv0 = float(self.kv_off + n * clock + n)
                return self._run_plan(now, kv0, steps), _NO_SEQS
        rejected: list[Seq] = []
        # blocks free for this step's prefill chunks, once decoding sequences have grown a
        # token; while decodes would not fit, the most recently admitted sequence gives way
        free = self.total_blocks - self.prefill_blocks - self._decode_blocks(1)
        preempted = False
        while free < 0 and self.running:
            self._preempt_last()
            preempted = True
            free = self.total_blocks - self.prefill_blocks - self._decode_blocks(1)
        heap = self.finish_heap
        if heap and not (heap[0][3].decoding and heap[0][3].k0 == heap[0][2]):
            self._clean_heap()
        decodes = self.n_decoding
        budget = self.max_tokens - decodes
        chunks: list[tuple[Seq, int]] = []
        if self.prefilling:
            for s in self.running.values():
                if s.decoding or budget <= 0:
                    continue
                q, add = self._chunk(s, budget, free)
                if q == 0:
                    break
                chunks.append((s, q))
                budget -= q
                free -= add
        if not preempted or not self.running:
            self._admit(now, chunks, budget, free, rejected)
        if not chunks and not decodes:
            return None, rejected
        if not chunks and not self.exact and not (preempted and self.waiting):
            # a run of decode steps, when no step of it would admit a waiting request: free
            # blocks only shrink as the decodes grow. After a preemption the next step may
            # admit again, so that step is taken alone, as exact stepping takes it.
            return self._decode_run(now), rejected
        return self._mixed(now, chunks), rejected

    def _admit(
        self,
        now: float,
        chunks: list[tuple[Seq, int]],
        budget: int,
        free: int,
        rejected: list[Seq],
    ) -> None:
        """Move waiting requests into the running batch, in order, while the sequence limit,
        the token `budget` and the `free` blocks allow; their first chunks go to `chunks`,
        impossible requests to `rejected`."""
        while self.waiting and len(self.running) < self.max_seqs and budget > 0:
            s = self.waiting[0]
            if self.refusal(s.req):  # it could never run here
                self.waiting.popleft()
                self.outstanding -= 1
                self.pending_prefill -= s.prefill_target
                rejected.append(s)
                continue
            # its whole first chunk or nothing, as vLLM v1 admits (allocate_slots for the
            # chunk, else the queue waits): a chunk cut to the free blocks readmitted a
            # sequence just preempted, whose next decode preempted it again
            q = min(s.prefill_target - s.computed, budget)
            add = -(-(s.computed + q) // BLOCK) - -(-s.computed // BLOCK)
            if q <= 0 or add > free:
                break
            self.waiting.popleft()
            self.running[id(s)] = s
            self.prefilling += 1
            if s.admitted_s is None:
                s.admitted_s = now
            chunks.append((s, q))
            budget -= q
            free -= add

    def refusal(self, req: Request) -> str:
        """Why `req` can never run on this engine ("" when it can): an empty prompt (vLLM
        refuses one; stopping the queue at it stopped every request behind it), or a prompt and
        output that the whole KV cache cannot hold at the request's last token, when it holds
        its prompt and every output token but the last (never fed back)."""
        if req.prompt_tokens <= 0:
            return "empty prompt"
        if -(-(req.prompt_tokens + req.output_tokens - 1) // BLOCK) > self.total_blocks:
            # the cache's size, not the request's counts: the reason groups refusals
            return f"prompt and output exceed the KV cache ({self.total_blocks * BLOCK} tokens)"
        return ""

    def _chunk(self, s: Seq, budget: int, free: int) -> tuple[int, int]:
        """Tokens of prefilling `s` this step within `budget` and the `free` blocks, and the
        blocks that adds."""
        c = s.computed
        q = min(s.prefill_target - c, budget)
        if q <= 0:
            return 0, 0
        held = -(-c // BLOCK)
        add = -(-(c + q) // BLOCK) - held
        if add <= free:
            return q, add
        q = (held + free) * BLOCK - c  # fill the free blocks, and no more
        if q <= 0:
            return 0, 0
        return q, -(-(c + q) // BLOCK) - held

    def _clean_heap(self) -> None:
        heap = self.finish_heap
        while heap and not (heap[0][3].decoding and heap[0][3].k0 == heap[0][2]):
            heapq.heappop(heap)

    def _mixed(self, now: float, chunks: list[tuple[Seq, int]]) -> StepPlan:
        tokens = attn = kv = 0.0
        for s, q in chunks:
            c = s.computed
            tokens += q
            attn += q * c + q * (q + 1) / 2
            kv += c + q
        d = self.n_decoding
        dec_kv = float(self.kv_off + d * self.clock + d)  # _decode_tokens(1): KV read this step
        cost = self.perf.step(tokens + d, attn + dec_kv, kv + dec_kv, len(chunks) + d)
        if not self.power_known:
            return StepPlan(now, now + cost.time_s, 0.0, 0.0, chunks, d, 1, dec_kv)
        return StepPlan(now, now + cost.time_s, cost.energy_j, cost.power_w, chunks, d, 1, dec_kv)

    def _decode_run(self, now: float) -> StepPlan:
        self._clean_heap()
        # until the first sequence finishes, or as far as the KV growth fits
        steps = self._decode_steps_fitting(
            self.total_blocks - self.prefill_blocks, self.finish_heap[0][0] - self.clock
        )
        kv0 = float(self._decode_tokens(0) + self.n_decoding)
        return self._run_plan(now, kv0, steps)

    def _run_plan(self, now: float, kv0: float, steps: int) -> StepPlan:
        n = self.n_decoding
        lines = run_lines(self.perf, n, kv0)
        time_s, energy_j, power_w = decode_run(self.perf, lines, steps)
        if not self.power_known:
            energy_j = power_w = 0.0
        return StepPlan(now, now + time_s, energy_j, power_w, [], n, steps, kv0, lines)

    def cut_run(self, plan: StepPlan, fits: Callable[[float], bool]) -> None:
        """Cut a decode run not yet started to its longest prefix whose peak power (W) `fits`,
        or to its first step when even that one does not, each timed and powered as the steps
        it keeps (the simulator's fast mode, at a site whose cap slows a step too big for it:
        exact stepping slows each step by its own power, so a run is cut where steps begin to
        be slowed, and a slowed step is taken alone). O(log steps) sums."""
        lines = plan.lines
        if lines is None or plan.steps <= 1 or not self.power_known:
            return
        perf = self.perf
        first = decode_run(perf, lines, 1)
        # the plan's own peak does not fit; when its first step does not either (nearly
        # always, under a cap that slows decode steps), that step alone, with no search
        lo, hi = 1, plan.steps - 1 if fits(first[2]) else 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits(decode_run(perf, lines, mid)[2]):
                lo = mid
            else:
                hi = mid - 1
        time_s, energy_j, power_w = first if lo == 1 else decode_run(perf, lines, lo)
        plan.steps = lo
        plan.end_s = plan.start_s + time_s
        plan.energy_j, plan.power_w = energy_j, power_w

    def start(self, plan: StepPlan) -> None:
        self.plan = plan

    def steps_done(self, now: float) -> int:
        """Decode steps of the current run already finished at `now` (0 outside a run)."""
        p = self.plan
        if p is None or p.lines is None or p.steps <= 1 or p.throttled or now <= p.start_s:
            return 0
        return lines_steps_within(p.lines, p.steps, now - p.start_s)

    def shorten(self, now: float) -> float | None:
        """Cut a running decode run at the first step boundary at or after `now` so that a
        new arrival can join the next step, or (the simulator's fast mode) so that the power it
        holds is handed over there to a step waiting for its site's power. Returns the new end
        time, or None if unchanged. The power reserved at the start stands until the (new) end."""
        p = self.plan
        lines = p.lines if p is not None else None
        if p is None or lines is None or p.steps <= 1 or p.throttled or now >= p.end_s:
            return None
        # the step running at `now` finishes first; one ending exactly at `now` is the last
        k = lines_steps_within(lines, p.steps, now - p.start_s, strict=True) + 1
        if k >= p.steps:
            return None
        time_s, energy_j, _ = decode_run(self.perf, lines, k)
        p.steps = k
        p.end_s = p.start_s + time_s
        p.energy_j = energy_j if self.power_known else 0.0
        return p.end_s

    def complete(self, now: float) -> StepResult:
        """Apply the current plan's effects at its end time `now`."""
        p = self.plan
        assert p is not None
        self.plan = None
        self.busy_s += p.end_s - p.start_s
        self.busy_energy_j += p.energy_j
        steps = p.steps
        self.steps += steps
        clock = self.clock = self.clock + steps  # every sequence decoding at the start advanced
        first: list[Seq] = []
        done: list[Seq] = []
        heap = self.finish_heap
        while heap and heap[0][0] <= clock:
            _, _, k0, s = heapq.heappop(heap)
            if s.decoding and s.k0 == k0:  # finished: leave the decode set (_leave_decoding)
                d = clock - k0
                s.computed, s.generated = s.c0 + d, s.g0 + d
                s.decoding = False
                self.n_decoding -= 1
                self.kv_off -= s.c0 - k0
                self._count_blocks(s, -1)
                done.append(s)
        if done:  # the sequences that finished held the soonest finish clocks
            del self.finish_order[: bisect_right(self.finish_order, clock)]
        for s, q in p.chunks:
            old = -(-s.computed // BLOCK)
            s.computed += q
            self.prefill_blocks += -(-s.computed // BLOCK) - old
            self.pending_prefill -= q
            if s.computed >= s.prefill_target:
                self.prefilling -= 1
                self.prefill_blocks -= -(-s.computed // BLOCK)
                s.generated += 1
                if s.first_token_s is None:
                    s.first_token_s = now
                    first.append(s)
                if s.generated >= s.req.output_tokens:
                    done.append(s)
                else:
                    self._enter_decoding(s)
        if done:
            running = self.running
            for s in done:
                del running[id(s)]
            self.outstanding -= len(done)
        return first, done

    def abort(self, s: Seq) -> None:
        """Stop a request whose client went away: a queued one leaves now, a running one
        finishes at its next token (freeing its KV cache there)."""
        for i, w in enumerate(self.waiting):
            if w is s:
                del self.waiting[i]
                self.outstanding -= 1
                self.pending_prefill -= s.prefill_target - s.computed
                return
        if id(s) not in self.running:
            return
        generated = self.progress(s)[1]
        s.req.output_tokens = min(s.req.output_tokens, generated + 1)
        if s.decoding:
            self._leave_decoding(s)
            self._enter_decoding(s)

    @property
    def used_blocks(self) -> int:
        return self.prefill_blocks + self._decode_blocks(0)

    def energy_j(self, span_s: float) -> float:
        """Busy energy plus idle power over the rest of `span_s`."""
        return self.busy_energy_j + self.idle_w * max(0.0, span_s - self.busy_s)
