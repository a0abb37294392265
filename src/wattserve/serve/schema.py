"""The OpenAI request bodies the gateway accepts, validated, and OpenAI-style error bodies.

Types are strict as in OpenAI's API: `"stream": "yes"`, `"max_tokens": "16"` or `true`,
`"n": "1"` answer 400 naming the field (no coercion); numbers must be finite. An optional field
sent as null is not given, as OpenAI reads it (`given`). A field of several types (`stop`,
`prompt`, a message's `content`) answers with what it accepts, as one error named for the field
(pydantic alone names one per type, `stop.str`, `stop.list[str]`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from wattserve.core.modelspec import fits_context

MAX_TOKENS_LIMIT = 32768
# the output a request that sets no limit is held to (serve --default-max-tokens)
DEFAULT_MAX_TOKENS = 256
# OpenAI and vLLM state no bound; the gateway's keeps a stop sequence a phrase (a real one is a
# few characters, "\n\nUser:"), and checking four of 100,000 held the event loop seconds
MAX_STOP_CHARS = 256
MAX_LOGIT_BIAS = 1024  # biased tokens in one request (vLLM takes any number)


STRICT = ConfigDict(extra="allow", strict=True)


def _one_of(accepts: str) -> WrapValidator:
    """A union field's validation as one error saying what the field `accepts`."""

    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError(
                "union_type", "Input should be {accepts}", {"accepts": accepts}
            ) from None

    return WrapValidator(check)


Stop = Annotated[str | list[str], _one_of("a string or a list of strings")]
Prompt = Annotated[
    str | list[str], _one_of("a string or a list of one string (token ids are not supported)")
]
Content = Annotated[
    str | list[dict[str, Any]], _one_of("a string or a list of content parts (objects)")
]


# OpenAI's content parts, and vLLM's audio_url and video_url: a part's type, and the field of
# that name it must carry (a string, or an object with the string keys named)
PARTS: dict[str, tuple[type, tuple[str, ...]]] = {
    "text": (str, ()),
    "image_url": (dict, ("url",)),
    "input_audio": (dict, ("data", "format")),
    "file": (dict, ()),
    "refusal": (str, ()),
    "audio_url": (dict, ("url",)),
    "video_url": (dict, ("url",)),
}


def _part_problem(part: dict[str, Any]) -> str | None:
    """What is wrong with one content part, or None: its type must be one of PARTS and carry
    the field of that name in the form OpenAI takes (`{"type": "image_url"}` without an
    `image_url.url` went on to a server that may answer 500)."""
    kind = part.get("type")
    if kind not in PARTS:
        return f"type must be one of {', '.join(PARTS)}, got {kind!r:.40}"
    form, keys = PARTS[kind]
    value = part.get(kind)
    a = "an" if kind[0] in "aeiou" else "a"
    if not isinstance(value, form):
        return f"{a} {kind} part needs '{kind}' as {'a string' if form is str else 'an object'}"
    for key in keys:
        if not isinstance(value, dict) or not isinstance(value.get(key), str) or not value[key]:
            return f"{a} {kind} part needs '{kind}.{key}' as a non-empty string"
    return None


class Message(BaseModel):
    model_config = STRICT
    # "function": the deprecated functions API's result message (it names the function)
    role: Literal["system", "user", "assistant", "tool", "developer", "function"]
    content: Content | None = None
    name: str | None = Field(default=None, max_length=256)

    @model_validator(mode="after")
    def _function_named(self) -> Message:
        if self.role == "function" and not self.name:  # as OpenAI refuses it
            raise ValueError("a message of role 'function' needs 'name', the function's")
        return self

    @field_validator("content")
    @classmethod
    def _parts(cls, v: str | list[dict[str, Any]] | None) -> str | list[dict[str, Any]] | None:
        for i, part in enumerate(v if isinstance(v, list) else ()):
            problem = _part_problem(part)
            if problem is not None:
                raise ValueError(f"part {i}: {problem}")
        return v

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        if isinstance(self.content, list):
            return " ".join(str(p.get("text", "")) for p in self.content if isinstance(p, dict))
        return ""


class StreamOptions(BaseModel):
    model_config = STRICT
    include_usage: bool | None = None  # null or absent: no usage chunk


class _Common(BaseModel):
    model_config = STRICT
    model: str = Field(min_length=1, max_length=256)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    n: int = Field(default=1, ge=1, le=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0, allow_inf_nan=False)
    stop: Stop | None = None
    user: str | None = None
    # OpenAI's ranges for fields the gateway passes on: checked here, not left to a backend
    # that may ignore them (an audit sent presence_penalty 5 and seed 1.5 and got a 200)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0, allow_inf_nan=False)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0, allow_inf_nan=False)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    # vLLM's fields for an answer of exactly max_tokens (wattserve bench sends them, as vLLM's
    # benchmark does): passed on to servers; llama.cpp takes min_tokens (docs/serve.md)
    ignore_eos: bool | None = None
    min_tokens: int | None = Field(default=None, ge=0, le=MAX_TOKENS_LIMIT)
    # token id (as text) -> bias, OpenAI's -100 to 100; a backend that cannot apply it
    # refuses the request (serve.capabilities)
    logit_bias: dict[str, float] | None = Field(default=None, max_length=MAX_LOGIT_BIAS)

    @field_validator("logit_bias")
    @classmethod
    def _token_biases(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        for token, bias in (v or {}).items():
            if not (token.isascii() and token.isdigit() and len(token) <= 10):
                raise ValueError(f"keys are token ids (digits), got {token!r:.40}")
            if not -100.0 <= bias <= 100.0:  # NaN too
                raise ValueError(f"biases are from -100 to 100, got {bias!r} for {token}")
        return v

    @field_validator("stop")
    @classmethod
    def _four_stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError(f"at most 4 stop sequences, got {len(v)}")
        longest = max(map(len, [v] if isinstance(v, str) else v or []), default=0)
        if longest > MAX_STOP_CHARS:
            raise ValueError(
                f"a stop sequence is at most {MAX_STOP_CHARS} characters, got one of {longest}"
            )
        return v

    @field_validator("min_tokens")
    @classmethod
    def _min_under_max(cls, v: int | None, info: ValidationInfo) -> int | None:
        name = "max_completion_tokens" if info.data.get("max_completion_tokens") else "max_tokens"
        most = info.data.get(name)
        if v is not None and most is not None and v > most:  # as vLLM refuses it
            raise ValueError(f"must be at most {name} ({most}), got {v}")
        return v

    @field_validator("stream_options")
    @classmethod
    def _options_need_a_stream(
        cls, v: StreamOptions | None, info: ValidationInfo
    ) -> StreamOptions | None:
        if v is not None and not info.data.get("stream"):  # as OpenAI answers it
            raise ValueError("only allowed with stream: true")
        return v

    @property
    def output_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


def _function_problem(tool: dict[str, Any]) -> str | None:
    """What is wrong with a function tool, or None: OpenAI's `function` object with a `name`
    string, and a `description` string and `parameters` object (a JSON Schema) where given
    (null as not given). A server given another form may answer 500 (llama-cpp-python does
    to `"parameters": "x"`), and be taken out of rotation for everyone."""
    fn = tool.get("function")
    if not isinstance(fn, dict):
        return f"needs 'function' as an object, got {_kind(fn)}"
    name, about, params = fn.get("name"), fn.get("description"), fn.get("parameters")
    if not isinstance(name, str) or not name:
        return f"function.name must be a non-empty string, got {_kind(name)}"
    if about is not None and not isinstance(about, str):
        return f"function.description must be a string, got {_kind(about)}"
    if params is not None and not isinstance(params, dict):
        return f"function.parameters must be an object (a JSON Schema), got {_kind(params)}"
    return None


class ChatRequest(_Common):
    messages: list[Message] = Field(min_length=1, max_length=4096)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)  # OpenAI's bound
    tool_choice: Any = None  # its form is the backend's to judge; its need of tools is not

    @field_validator("tool_choice")
    @classmethod
    def _choice_needs_tools(cls, v: Any, info: ValidationInfo) -> Any:
        if v not in (None, "none", "auto") and not info.data.get("tools"):  # as OpenAI and
            raise ValueError("only allowed when tools are given")  # vLLM answer it
        return v

    @field_validator("tools")
    @classmethod
    def _functions(cls, v: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        for i, tool in enumerate(v or ()):  # a function tool's parts: other kinds pass on
            if tool.get("type") == "function" or "function" in tool:
                problem = _function_problem(tool)
                if problem is not None:
                    raise ValueError(f"tool {i}: {problem}")
        return v

    @field_validator("top_logprobs")
    @classmethod
    def _top_needs_logprobs(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is not None and not info.data.get("logprobs"):  # as OpenAI answers it
            raise ValueError("only allowed with logprobs: true")
        return v

    def prompt_text(self) -> str:
        return "\n".join(f"{m.role}: {m.text()}" for m in self.messages)


class CompletionRequest(_Common):
    prompt: Prompt
    best_of: int | None = Field(default=None, ge=1, le=1)  # as n: one completion a request
    logprobs: int | None = Field(default=None, ge=0, le=5)  # the legacy API's: a count
    echo: bool | None = None  # the prompt before the completion (serve.capabilities)
    suffix: str | None = None  # text to complete up to (insertion)

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and len(v) != 1:
            raise ValueError("batched prompts are not supported: send one prompt per request")
        return v

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


def parse_body(kind: str, raw: dict[str, Any]) -> ChatRequest | CompletionRequest:
    """A request body (`kind`: chat or completion) validated; raises ValidationError."""
    if kind == "chat":
        return ChatRequest.model_validate(raw)
    return CompletionRequest.model_validate(raw)


# the fields a body must hold: null there is a wrong type (400 "got null"), not "not given"
REQUIRED = ("model", "messages", "prompt")


def given(raw: dict[str, Any]) -> dict[str, Any]:
    """The body without the fields it sends as null, other than REQUIRED ones: OpenAI reads
    `"stream": null`, `"n": null` as the field not given. What is validated and forwarded:
    servers behind the gateway may refuse a null (llama-cpp-python's answers 422 to
    `"stream": null`)."""
    if all(v is not None for v in raw.values()):
        return raw
    return {k: v for k, v in raw.items() if v is not None or k in REQUIRED}


def error_body(
    message: str,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """An OpenAI-style error object."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def validation_message(exc: ValidationError) -> tuple[str, str | None]:
    """The first problem of a validation error as (message, param)."""
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ()))
    msg = first.get("msg", "invalid value")
    if first.get("type") == "value_error":  # a validator's own words, without pydantic's prefix
        msg = str(first.get("ctx", {}).get("error", msg))
    sent = first.get("input")
    if first.get("type") == "int_type" and isinstance(sent, float) and abs(sent) >= 2**63:
        # orjson reads an integer past 64 bits as a float: the number is wrong, not its type
        msg = f"Input is out of range{_range(loc)}, got {sent:.3g}"
    elif first.get("type", "").endswith("_type") and "input" in first:  # say what was sent
        msg = f"{msg}, got {_kind(sent)}"
    return (f"{loc}: {msg}" if loc else msg), (loc or None)


def _kind(value: Any) -> str:
    """A sent value's type for a message: 'int', 'null', 'list of int', 'list of int and str'."""
    if value is None:
        return "null"
    if isinstance(value, list) and value:
        inner = sorted({type(v).__name__ for v in value})
        return f"list of {' and '.join(inner[:3])}"
    return type(value).__name__


def _range(name: str) -> str:
    """' (1 to 32768)' for a bounded integer field of the request bodies, else ''."""
    field = _Common.model_fields.get(name)
    meta = field.metadata if field is not None else []
    lo = next((m.ge for m in meta if hasattr(m, "ge")), None)  # Field(ge=..., le=...)
    hi = next((m.le for m in meta if hasattr(m, "le")), None)
    return f" ({lo} to {hi})" if lo is not None and hi is not None else ""


def approx_tokens(text: str) -> int:
    """Prompt tokens for routing and emulation when no tokenizer is at hand: about 4 characters
    per token (OpenAI's rule of thumb for English), at least 1."""
    return max(1, (len(text) + 3) // 4)


class WindowProblem(NamedTuple):
    """A request that its model's context window cannot hold: the 400's words."""

    message: str
    param: str
    code: str | None = None


def output_room(
    body: ChatRequest | CompletionRequest,
    kind: str,
    prompt_tokens: int,
    default_max_tokens: int,
    window: int | None,
) -> int | WindowProblem:
    """The output tokens a request is held to (its limit, else the gateway's default, within
    what the context `window` leaves after the prompt), or why the window cannot hold it."""
    least = body.min_tokens or 0  # vLLM's: the schema holds it under a given max_tokens
    max_tokens = body.output_limit or max(default_max_tokens, least)
    if window is None:
        return max_tokens
    asked = body.output_limit or 1
    if not fits_context(window, prompt_tokens, asked):  # OpenAI's wording
        return WindowProblem(
            f"This model's maximum context length is {window} tokens. However, you requested "
            f"{prompt_tokens + asked} tokens ({prompt_tokens} in the prompt, {asked} for the "
            "completion; prompts are counted at about 4 characters a token).",
            "messages" if kind == "chat" else "prompt",
            "context_length_exceeded",
        )
    max_tokens = min(max_tokens, window - prompt_tokens)
    if least > max_tokens:
        return WindowProblem(
            f"min_tokens: {least} is more than the {max_tokens} tokens the model's "
            f"{window}-token context leaves after the prompt's {prompt_tokens} (counted at "
            "about 4 characters a token)",
            "min_tokens",
        )
    return max_tokens
