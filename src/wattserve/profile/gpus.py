"""The catalog device a GPU is, by the name CUDA gives it."""

from __future__ import annotations

import re

# GPU names as CUDA reports them ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB"), matched
# to catalog ids by whole words (split at spaces and dashes, any case): every word of the
# first set and none of the second; the first rule that matches wins. A name no rule matches
# is profiled as a device of its own (local-gpu). Matched as substrings, an L40 was filed as
# an L4 (72 W: its watts then refused), a GH200 or an H200 NVL as an H200 SXM, and an A100
# PCIe as the A100 SXM 80GB.
GPU_NAMES: tuple[tuple[tuple[str, ...], tuple[str, ...], str], ...] = (
    (("H100", "NVL"), (), "h100-nvl"),
    (("H100", "PCIE"), (), "h100-pcie"),
    (("H100",), (), "h100-sxm"),
    (("H200",), ("NVL",), "h200-sxm"),
    (("GB200",), (), "gb200"),
    (("B200",), (), "b200"),
    (("A100", "SXM4", "40GB"), (), "a100-sxm-40gb"),
    (("A100", "SXM4"), (), "a100-sxm-80gb"),
    (("A100", "80GB"), ("PCIE",), "a100-sxm-80gb"),
    (("L40S",), (), "l40s"),
    (("L4",), (), "l4"),
    (("A10G",), (), "a10g"),
    (("RTX", "4090"), (), "rtx-4090"),
)


def catalog_gpu(name: str) -> str | None:
    """The catalog id of the GPU CUDA names `name`, or None (GPU_NAMES)."""
    words = set(re.split(r"[\s\-]+", name.upper()))
    return next(
        (cid for need, unless, cid in GPU_NAMES if set(need) <= words and not set(unless) & words),
        None,
    )
