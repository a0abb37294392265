"""`serve --default-max-tokens`: the output a request that sets no limit is held to (it was
fixed at 256: a chat client that sends no max_tokens had every answer cut at 256 tokens, with
no way for the operator to change it). Over real sockets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
from serving import FAST_FLEET, gateway


def _completion_tokens(url: str, **limit: int) -> tuple[int, str]:
    body = {"model": "llama-3.2-1b", "messages": [{"role": "user", "content": "hi"}], **limit}
    r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()
    return out["usage"]["completion_tokens"], out["choices"][0]["finish_reason"]


def test_a_request_without_a_limit_is_held_to_the_gateways_default(tmp_path: Path) -> None:
    with gateway(tmp_path, FAST_FLEET, "--default-max-tokens", "7") as s:
        assert _completion_tokens(s.url) == (7, "length")  # emulated: runs to its limit
        assert _completion_tokens(s.url, max_tokens=3) == (3, "length")  # the client's wins
        assert _completion_tokens(s.url, max_completion_tokens=4) == (4, "length")
    with gateway(tmp_path, FAST_FLEET, name="gw2") as s:
        assert _completion_tokens(s.url)[0] == 256  # the default, as before


def test_a_default_that_is_no_count_is_refused_naming_the_flag(tmp_path: Path) -> None:
    for bad in ("0", "-5", "nan", "1e9", "many"):
        p = subprocess.run(
            [
                sys.executable,
                "-m",
                "wattserve",
                "serve",
                "--default-max-tokens",
                bad,
                "--port",
                "0",
                "--db",
                str(tmp_path / "x.db"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 2, (bad, p.returncode, p.stderr)
        assert "--default-max-tokens" in p.stderr, (bad, p.stderr)
        assert "Traceback" not in p.stderr
