"""Prompts of a given length in tokens, without the server's tokenizer.

A prompt is a seeded random run of common English words, each three letters after a space: one
token in the BPE vocabularies of Llama, Mistral, Qwen and GPT models, and exactly four
characters, which is also one token by the gateway's rule of thumb. Random words keep a server's
prefix cache from serving one request's prompt to the next. Chat templates add a fixed number of
tokens; `Calibration` measures it (and the tokens per word) from the server's own `usage`
counts on two probe requests, and `words_for` inverts it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

_WORDS = (
    "the and for you not are but all any can her was one our out day get has him his how man"
    " new now old see two way who boy did its let put say she too use big end far few got own"
    " run set top try why yes ask bad box car cut dog eat eye fun hot job key law lot may red"
)
WORDS = tuple(_WORDS.split())


@dataclass(frozen=True, slots=True)
class Calibration:
    """prompt tokens = offset + slope x words, as the server counted them."""

    offset: float = 0.0
    slope: float = 1.0
    measured: bool = False

    def words_for(self, tokens: int) -> int:
        """Words that make a prompt of `tokens` tokens (at least one)."""
        return max(1, round((tokens - self.offset) / self.slope))


# tokens per word a tokenizer can give these words: one each in BPE vocabularies, four as
# bytes or characters; a line outside (5 tokens for 16 words, 6 for 144) is no tokenizer's,
# and had sized prompts 128 times too long
TOKENS_PER_WORD = (0.25, 8.0)


def fit(points: list[tuple[int, int]]) -> Calibration:
    """The line through (words, prompt tokens) probes; the identity when they say nothing, or
    what no tokenizer would say (TOKENS_PER_WORD)."""
    if len(points) < 2 or points[0][0] == points[-1][0]:
        return Calibration()
    (w1, t1), (w2, t2) = points[0], points[-1]
    slope = (t2 - t1) / (w2 - w1)
    if not TOKENS_PER_WORD[0] <= slope <= TOKENS_PER_WORD[1]:
        return Calibration()
    return Calibration(offset=t1 - slope * w1, slope=slope, measured=True)


def prompt(words: int, rng: random.Random) -> str:
    """`words` random words, the first without its leading space."""
    return " ".join(rng.choices(WORDS, k=words))
