"""The local model's own prompt counts. llama-cpp-python's server (0.3.36) sends no `usage` in
a stream, whatever `stream_options` asks (its request schema has no such field and drops it);
the gateway's guess of about 4 characters a token misses what the chat template adds (28 tokens
for SmolLM2: its default system prompt and the role markers). So the gateway loads the GGUF's
vocabulary (no weights: about 0.4 s and 50 MB) and counts a streamed request's prompt as the
server does: a chat rendered by the GGUF's own chat template, then tokenized with its special
tokens; a completion's prompt tokenized as text.

Only where the server itself uses the GGUF's template (`chat_template.default`, as for the
SmolLM2 GGUF): for a model whose chat format llama-cpp-python guesses or names otherwise, chats
are not counted here, and their counts stay the gateway's guess, marked estimated."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

log = logging.getLogger("wattserve.serve")


class PromptCounter:
    """Counts prompts with one model's tokenizer, on a thread of its own (off the event loop;
    one thread: the tokenizer is used by one caller at a time)."""

    def __init__(self, gguf: Path) -> None:
        self.gguf = gguf
        self.llm: Any = None  # llama_cpp.Llama, vocabulary only
        self.chat: Any = None  # llama_chat_format.Jinja2ChatFormatter, or None
        self.quiet: Any = None  # the log callback handed to llama.cpp, kept alive here
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="tokenizer")

    async def load(self) -> None:
        """Load the vocabulary and chat template; on failure counts stay the gateway's guess
        (logged once)."""
        try:
            await asyncio.get_running_loop().run_in_executor(self.pool, self._load)
        except Exception as exc:  # an old or broken llama-cpp-python: guesses, marked
            log.warning("wattserve: no tokenizer for %s (%s): counts are estimated", self.gguf, exc)

    def _load(self) -> None:
        import ctypes

        import llama_cpp
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        # llama.cpp's own log lines go to the debug log, not to stderr: a vocabulary without
        # weights warns of a context longer than its training one (0), which means nothing
        # here. (This process runs no model: the server is another process.)
        self.quiet = llama_cpp.llama_log_callback(_to_debug)
        llama_cpp.llama_log_set(self.quiet, ctypes.c_void_p(0))
        llm = Llama(str(self.gguf), vocab_only=True, n_ctx=16, n_batch=16, verbose=False)
        template = llm.metadata.get("tokenizer.chat_template")
        if template and llm.chat_format == "chat_template.default":  # what the server uses
            self.chat = Jinja2ChatFormatter(
                template=template,
                eos_token=_text(llm, llm.token_eos()),
                bos_token=_text(llm, llm.token_bos()),
                stop_token_ids=[llm.token_eos()],
            )
        self.llm = llm

    async def count(self, kind: str, body: dict[str, Any]) -> int | None:
        """The prompt tokens of `body` as sent to the server (`kind`: chat or completion), or
        None where they cannot be counted here."""
        if self.llm is None or (kind == "chat" and self.chat is None):
            return None
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self.pool, self._count, kind, body
            )
        except Exception as exc:  # a template that refuses these messages: the server would too
            log.debug("wattserve: prompt not counted: %r", exc)
            return None

    def _count(self, kind: str, body: dict[str, Any]) -> int:
        if kind == "chat":  # chat_formatter_to_chat_completion_handler, as the server runs it
            formatted = self.chat(messages=body.get("messages") or [])
            text, add_bos = formatted.prompt, not formatted.added_special
        else:
            prompt = body.get("prompt", "")
            text, add_bos = (prompt[0] if isinstance(prompt, list) else prompt), True
        return len(self.llm.tokenize(str(text).encode("utf-8"), add_bos=add_bos, special=True))

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _to_debug(level: int, text: bytes, user_data: Any) -> None:
    log.debug("llama.cpp: %s", text.decode("utf-8", "replace").rstrip())


def _text(llm: Any, token: int) -> str:
    """A special token's text (the chat template's bos_token and eos_token)."""
    return "" if token < 0 else llm.detokenize([token], special=True).decode("utf-8", "replace")
