"""The synthetic text of the emulated backends (an engine replica, a hosted API): the same
words for every request, so that where it meets a stop sequence is known when the request
arrives (`stop_point`), and the request is made to end at that token, as an engine's would."""

from __future__ import annotations

import bisect
import itertools
from typing import Any

WORDS = (
    "emulated",
    "tokens",
    "from",
    "wattserve",
    "standing",
    "in",
    "for",
    "real",
    "text",
    "timed",
    "like",
    "the",
    "hardware",
    "it",
    "models",
)


def _word(i: int) -> str:
    """The text of an emulated answer's `i`-th token (from 0)."""
    return WORDS[i % len(WORDS)] + " "


PERIOD = "".join(map(_word, range(len(WORDS))))  # the text repeats every len(WORDS) tokens
STARTS = list(itertools.accumulate((len(_word(i)) for i in range(len(WORDS) - 1)), initial=0))


def stop_point(stop: str | list[str] | None, max_tokens: int, min_tokens: int) -> tuple[int, int]:
    """Where an emulated answer of at most `max_tokens` tokens meets its first stop sequence,
    checked as an engine checks (vLLM: each token's new text, once `min_tokens` tokens are
    out): (the tokens it generates, the characters of its text kept, the stop sequence left
    out), or (max_tokens, -1) where none is met. The text is periodic, so one search per
    stop in a few periods of it, from the first token checked, finds the first place it ends
    in a token's new text, or that it never does: linear in the stops' lengths (checking
    token by token was quadratic: 4 stops of 100,000 characters held the event loop 7 s)."""
    stops = [s for s in ([stop] if isinstance(stop, str) else stop or []) if s]
    if not stops:
        return max_tokens, -1
    first = max(0, min_tokens - 1)  # the first token whose new text is checked
    span = max(map(len, stops)) // len(PERIOD) + 1  # the periods a stop spans, at most
    periods, at_token = divmod(first, len(WORDS))
    back = min(span, periods)  # the periods before the first token's a stop may begin in
    periods -= back  # the text searched starts there
    begin = back * len(PERIOD) + STARTS[at_token]  # where the first token checked starts
    # every place a stop can end after `begin` recurs within a period of it
    text = PERIOD * (back + span + 2)
    best: tuple[int, int] | None = None  # (the token where a stop ends, where it begins)
    for s in stops:
        at = text.find(s, max(0, begin - len(s) + 1))  # the first to end after `begin`
        if at >= 0:
            whole, into = divmod(at + len(s) - 1, len(PERIOD))  # the stop's last character
            ends = (periods + whole) * len(WORDS) + bisect.bisect_right(STARTS, into) - 1
            best = min(best or (ends, at), (ends, at))
    if best is None or best[0] >= max_tokens:
        return max_tokens, -1
    return best[0] + 1, periods * len(PERIOD) + best[1]


class SyntheticText:
    """The text of one answer's tokens: `_word`s, cut at `keep` characters (-1: not cut),
    where a stop sequence begins."""

    __slots__ = ("chars", "keep", "tokens")

    def __init__(self, keep: int = -1) -> None:
        self.keep = keep
        self.tokens = self.chars = 0

    def next_text(self) -> str:
        """The text of the next token: empty from where a stop sequence begins."""
        word = _word(self.tokens)
        self.tokens += 1
        if self.keep >= 0:
            word = word[: max(0, self.keep - self.chars)]
        self.chars += len(word)
        return word


def stop_for(body: dict[str, Any], max_tokens: int) -> tuple[int, int]:
    """`stop_point` of a validated request body: its `stop` and `min_tokens`."""
    return stop_point(body.get("stop"), max_tokens, body.get("min_tokens") or 0)
