from __future__ import annotations

import json
from pathlib import Path

import pytest

from wattserve import ConfigError, UnknownNameError, builtin_model_ids, load_model


@pytest.mark.parametrize(
    ("model", "params_b", "active_b"),
    [
        ("llama-3.1-8b", 8.03, 7.50),
        ("llama-3.1-70b", 70.55, 69.50),
        ("llama-3.1-405b", 405.85, 403.75),
        ("llama-2-7b", 6.74, 6.61),
        ("mixtral-8x7b", 46.70, 12.75),
        ("qwen2.5-0.5b", 0.494, 0.494),
        ("smollm2-135m", 0.1345, 0.1345),
    ],
)
def test_parameter_counts_match_published_sizes(
    model: str, params_b: float, active_b: float
) -> None:
    m = load_model(model)
    assert m.total_params / 1e9 == pytest.approx(params_b, rel=0.005)
    assert m.active_matmul_params / 1e9 == pytest.approx(active_b, rel=0.01)


def test_builtin_catalog_has_required_models() -> None:
    ids = set(builtin_model_ids())
    assert len(ids) >= 10
    assert {
        "llama-3.1-8b",
        "llama-3.1-70b",
        "llama-3.1-405b",
        "llama-2-7b",
        "llama-2-13b",
        "llama-2-70b",
        "mixtral-8x7b",
        "qwen2.5-0.5b",
        "smollm2-135m",
    } <= ids
    moes = [i for i in ids if load_model(i).is_moe]
    assert len(moes) >= 2


def test_kv_cache_bytes_gqa() -> None:
    m = load_model("llama-3.1-8b")
    assert m.kv_bytes_per_token("bf16") == 2 * 32 * 8 * 128 * 2  # 128 KiB per token
    assert m.kv_bytes_per_token("fp8") == m.kv_bytes_per_token("bf16") / 2


def test_hf_config_with_custom_layer_count(tmp_path: Path) -> None:
    cfg = {
        "model_type": "llama",
        "hidden_size": 4096,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 14336,
        "vocab_size": 128256,
    }
    d = tmp_path / "half-llama"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg))
    half = load_model(str(d))
    full = load_model("llama-3.1-8b")
    assert half.id == "half-llama"
    per_layer = (full.total_params - 2 * full.vocab_size * full.hidden_size) / 32
    assert half.total_params == pytest.approx(full.total_params - 16 * per_layer, rel=1e-4)


def test_moe_config_from_file(tmp_path: Path) -> None:
    cfg = {
        "model_type": "mixtral",
        "hidden_size": 1024,
        "num_hidden_layers": 4,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "intermediate_size": 2048,
        "vocab_size": 1000,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
    }
    f = tmp_path / "tiny-moe.json"
    f.write_text(json.dumps(cfg))
    m = load_model(str(f))
    assert m.is_moe and m.num_experts == 8 and m.experts_per_token == 2
    assert m.active_matmul_params < m.total_params


def test_malformed_config_names_file_line_and_field(tmp_path: Path) -> None:
    f = tmp_path / "config.json"
    f.write_text(
        '{\n  "hidden_size": 4096,\n  "num_hidden_layers": -2,\n  "num_attention_heads": 32\n}'
    )
    with pytest.raises(ConfigError) as err:
        load_model(str(f))
    assert err.value.line == 3 and err.value.field == "num_hidden_layers"
    f.write_text('{\n  "hidden_size": 4096,\n  oops\n}')
    with pytest.raises(ConfigError) as err:
        load_model(str(f))
    assert err.value.line == 3


def test_ids_are_found_in_any_case_as_hugging_face_ids_are() -> None:
    """`Llama-3.1-8B` is what a person types; an alias in any case already worked."""
    from wattserve import load_catalog

    assert load_model("Llama-3.1-8B").id == "llama-3.1-8b"
    assert load_model("meta-llama/LLAMA-3.1-8B-instruct").id == "llama-3.1-8b"
    cat = load_catalog()
    assert cat.device("H100-SXM").id == "h100-sxm" and cat.device("Groq-LPU").id == "groq-lpu"


def test_rank_and_plan_take_device_ids_in_any_case() -> None:
    """`--hardware H100-SXM` used to be unknown to rank, and `--available H100-SXM=2` to plan."""
    from wattserve.core.workload import SLO, Request, Workload
    from wattserve.plan.api import plan
    from wattserve.rank.api import rank

    ranked = rank("llama-3.1-8b", hardware="H100-SXM,A100-sxm-80GB")
    assert {r.hardware for r in ranked.rows} == {"h100-sxm", "a100-sxm-80gb"}
    reqs = [Request(i, i * 0.5, 500, 100, "llama-3.1-8b") for i in range(40)]
    wl = Workload(reqs, {"default": SLO()})
    result = plan(wl, hardware=["H100-SXM", "l4"], available={"H100-SXM": 0})
    assert result.replicas and all(name.startswith("l4-") for name in result.replicas)
    with pytest.raises(ConfigError, match="given twice"):
        plan(wl, hardware=["h100-sxm"], available={"H100-SXM": 1, "h100-sxm": 2})


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(UnknownNameError) as err:
        load_model("llama-3.1-8")
    assert "llama-3.1-8b" in str(err.value)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"tie_word_embeddings": "false"}, "tie_word_embeddings"),  # bool("false") is True
        ({"tie_word_embeddings": 1}, "tie_word_embeddings"),
        ({"num_local_experts": 4, "num_experts_per_tok": 8}, "num_experts_per_tok"),
        # a head of no dimensions: an explicit null used to pass the check (a ZeroDivisionError
        # in plan and simulate)
        ({"hidden_size": 16, "head_dim": None}, "num_attention_heads"),
        ({"hidden_size": 16}, "num_attention_heads"),
        # architectures the model does not describe, refused rather than modelled as another:
        # DeepSeek-V3's MLA cache counted as K and V per head was 25x its size
        ({"kv_lora_rank": 512, "qk_rope_head_dim": 64}, "kv_lora_rank"),
        ({"sliding_window": 4096}, "sliding_window"),  # Mistral-7B-v0.1, Phi-3
        ({"layer_types": ["sliding_attention", "full_attention"]}, "layer_types"),
        ({"first_k_dense_replace": 3}, "first_k_dense_replace"),
        ({"decoder_sparse_step": 2}, "decoder_sparse_step"),
        ({"mlp_only_layers": [0, 1]}, "mlp_only_layers"),
    ],
)
def test_config_fields_that_would_read_as_something_else_are_refused(
    tmp_path: Path, changes: dict[str, object], field: str
) -> None:
    config = json.loads(
        (Path(__file__).parent.parent / "src/wattserve/data/models/llama-3.1-8b.json").read_text()
    )
    f = tmp_path / "config.json"
    f.write_text(json.dumps({**config, **changes}, indent=1))
    with pytest.raises(ConfigError) as err:
        load_model(str(f))
    assert (err.value.path, err.value.field) == (str(f), field)
    assert err.value.line is not None


def test_configs_that_name_a_feature_off_still_load(tmp_path: Path) -> None:
    # Qwen2.5's config carries a window it does not use; Mixtral's is null; layers all alike
    config = json.loads(
        (Path(__file__).parent.parent / "src/wattserve/data/models/llama-3.1-8b.json").read_text()
    )
    f = tmp_path / "config.json"
    for extra in (
        {"sliding_window": 131072, "use_sliding_window": False},
        {"sliding_window": None},
        {"layer_types": ["full_attention"] * 32, "mlp_only_layers": [], "decoder_sparse_step": 1},
    ):
        f.write_text(json.dumps({**config, **extra}))
        assert load_model(str(f)).num_layers == 32


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"hidden_size": 0}, "hidden_size"),  # was a ZeroDivisionError in the perf model
        ({"num_kv_heads": 0}, "num_kv_heads"),
        ({"head_dim": 1.5}, "head_dim"),
        ({"intermediate_size": -1}, "intermediate_size"),
        ({"num_kv_heads": 3}, "num_kv_heads"),  # 32 heads do not split into 3 groups
    ],
)
def test_a_hand_built_model_spec_is_held_to_what_a_config_is(
    changes: dict[str, object], field: str
) -> None:
    import dataclasses

    with pytest.raises(ConfigError) as err:
        dataclasses.replace(load_model("llama-3.1-8b"), **changes)  # type: ignore[arg-type]
    assert err.value.field == field
