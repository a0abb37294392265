"""What a request asks a backend to do beyond generating text, and which backends do it.

OpenAI's `tools`, `logprobs` and `response_format` change what the answer must be: a backend
that ignores them answers 200 with something else (prose for JSON mode, no tool call for a
required one, `logprobs: null`), which a client cannot tell from an answer. So each field a
request sets is a capability (`needs`), each backend says which it honours
(`Backend.honours`), and the router sends the request only to targets whose backends honour
all of them; where no target of the model does, the request is refused with a 400 naming the
field (`refusal`). A field left out, or set to what asks nothing (`tool_choice: "none"`,
`response_format: {"type": "text"}`, `logprobs: false`), needs nothing.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Need(NamedTuple):
    """One capability a request needs: its name (`chat.logprobs`), the field a refusal
    names, and what it asks, in words."""

    capability: str
    param: str
    what: str


def forced_tool(body: dict[str, Any]) -> str | None:
    """The one function of its `tools` a chat request forces (OpenAI's `tool_choice` naming
    it, or `"required"` with a single tool, which leaves no other choice), else None."""
    choice, tools = body.get("tool_choice"), body.get("tools")
    names = [_name(t) for t in tools] if isinstance(tools, list) else []
    if isinstance(choice, dict):
        name = _name(choice)
        return name if name is not None and name in names else None
    if choice == "required" and len(names) == 1:
        return names[0]
    return None


def forced_function(body: dict[str, Any]) -> dict[str, Any] | None:
    """The tool a chat request forces (`forced_tool`) rebuilt from the parts the gateway's
    schema checked: its name, and its description and parameters where given. What a server
    that honours only a forced call is sent, rather than the client's `tools` as sent."""
    name = forced_tool(body)
    if name is None:
        return None
    fn = next(t["function"] for t in body["tools"] if _name(t) == name)
    kept = {k: fn[k] for k in ("description", "parameters") if fn.get(k) is not None}
    return {"type": "function", "function": {"name": name} | kept}


def _name(tool: Any) -> str | None:
    """The function name of a tool or a tool_choice (`{"function": {"name": ...}}`)."""
    fn = tool.get("function") if isinstance(tool, dict) else None
    name = fn.get("name") if isinstance(fn, dict) else None
    return name if isinstance(name, str) and name else None


def needs(kind: str, body: dict[str, Any]) -> list[Need]:
    """The capabilities a validated request body needs (`kind`: chat or completion), in the
    order a refusal names them. A field of an unexpected form still needs its capability: a
    backend that passes it on lets its server judge it, another refuses it."""
    out: list[Need] = []
    if kind == "chat" and body.get("tools") and body.get("tool_choice") != "none":
        if forced_tool(body) is not None:
            out.append(Need("chat.tools.named", "tool_choice", "call the tool tool_choice names"))
        else:
            out.append(Need("chat.tools", "tools", "choose and call tools"))
    # OpenAI's deprecated form of tools: passed on by a server's backend, honoured by no other
    if kind == "chat" and body.get("functions") and body.get("function_call") != "none":
        out.append(Need("chat.tools", "functions", "choose and call functions"))
    # chat's logprobs is a boolean, completions' a count (0 asks for the chosen token's)
    lp = body.get("logprobs")
    if lp is True or (kind == "completion" and lp is not None):
        out.append(Need(f"{kind}.logprobs", "logprobs", "return logprobs"))
    if body.get("logit_bias"):
        out.append(Need(f"{kind}.logit_bias", "logit_bias", "bias the tokens logit_bias names"))
    if kind == "completion" and body.get("echo") is True:  # llama.cpp echoes whole answers only
        streamed = bool(body.get("stream"))
        out.append(
            Need(
                "completion.echo.stream" if streamed else "completion.echo",
                "echo",
                "echo the prompt in a stream" if streamed else "echo the prompt",
            )
        )
    if kind == "completion" and body.get("suffix"):
        out.append(Need("completion.suffix", "suffix", "complete up to a suffix"))
    if kind == "chat" and _media(body.get("messages")):
        out.append(Need("chat.media", "messages", "read image, audio, video or file parts"))
    fmt = body.get("response_format")
    if fmt is not None:
        form = fmt.get("type") if isinstance(fmt, dict) else None
        if form != "text":
            name = str(form)[:40]
            out.append(
                Need(f"{kind}.response_format.{name}", "response_format", f"answer as {name!r}")
            )
    return out


def refusal(need: Need, model: str, kinds: list[str]) -> str:
    """The 400's message for a request whose `need` none of `model`'s backends (of `kinds`)
    honours."""
    which = " and ".join(kinds) or "no"
    return (
        f"{need.param}: the {which} backend{'s' if len(kinds) > 1 else ''} serving {model} "
        f"cannot {need.what} (they would ignore the field and answer as if it were not sent); "
        "leave the field out, or send the request to a model served by an OpenAI-compatible "
        "server (backend kind: openai)"
    )


def _media(messages: Any) -> bool:
    """Whether a chat's messages carry a part other than text (an image, audio, a video or a
    file): a text-only engine reads the text around it and answers as if it saw the picture
    (SmolLM2 described a portrait it was never shown; found 2026-12-06)."""
    for m in messages if isinstance(messages, list) else ():
        content = m.get("content") if isinstance(m, dict) else None
        for part in content if isinstance(content, list) else ():
            if isinstance(part, dict) and part.get("type") not in ("text", "refusal"):
                return True
    return False
