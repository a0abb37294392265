"""Model architectures (dense, GQA, MoE) read from Hugging Face `config.json` files.

Derived sizes (parameters, FLOPs per token, KV-cache bytes per token) are properties computed
from the architecture fields, so there is one source of truth per fact.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from wattserve.core.dtypes import BYTES_PER_ELEMENT, Dtype
from wattserve.core.textfile import parse_json, read_text
from wattserve.errors import ConfigError, UnknownNameError

# HF model types whose MLP is a plain two-matrix feed-forward; all others are taken as gated
# (SwiGLU-style, three matrices: gate, up, down), as in Llama, Mistral, Qwen and Mixtral.
NON_GATED_MLP = frozenset({"gpt2", "gpt_neox", "gptj", "opt", "bloom", "falcon", "phi", "mpt"})

# Alternative field names used by some architectures, first name wins.
_ALIASES: dict[str, tuple[str, ...]] = {
    "hidden_size": ("hidden_size", "n_embd", "d_model"),
    "num_hidden_layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "num_attention_heads": ("num_attention_heads", "n_head", "num_heads"),
    "intermediate_size": ("intermediate_size", "n_inner", "ffn_dim"),
    "num_experts": ("num_local_experts", "num_experts", "n_routed_experts"),
}


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A decoder-only transformer's architecture."""

    id: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tied_embeddings: bool = False
    num_experts: int = 1
    experts_per_token: int = 1
    expert_intermediate_size: int = 0
    shared_intermediate_size: int = 0
    gated_mlp: bool = True
    max_context: int | None = None
    source: str = ""

    def __post_init__(self) -> None:
        """A spec built by hand is held to what a config.json is (`load_model`): sizes are
        positive whole numbers, so that no figure behind them divides by zero or is NaN."""
        for name in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                     "vocab_size", "num_experts", "experts_per_token"):  # fmt: skip
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"must be a positive whole number, got {v!r:.40}", field=name)
        for name in ("intermediate_size", "expert_intermediate_size", "shared_intermediate_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"must be a whole number >= 0, got {v!r:.40}", field=name)
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                f"({self.num_kv_heads})",
                field="num_kv_heads",
            )

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1

    @property
    def attention_params_per_layer(self) -> int:
        q_and_o = 2 * self.hidden_size * self.num_heads * self.head_dim
        k_and_v = 2 * self.hidden_size * self.num_kv_heads * self.head_dim
        return q_and_o + k_and_v

    @property
    def expert_params(self) -> int:
        """Parameters of one expert's MLP (the whole MLP for a dense model)."""
        mats = 3 if self.gated_mlp else 2
        ffn = self.expert_intermediate_size or self.intermediate_size
        return mats * self.hidden_size * ffn

    @property
    def shared_mlp_params(self) -> int:
        mats = 3 if self.gated_mlp else 2
        return mats * self.hidden_size * self.shared_intermediate_size

    @property
    def router_params(self) -> int:
        return self.hidden_size * self.num_experts if self.is_moe else 0

    @property
    def lm_head_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def total_params(self) -> int:
        """Every stored parameter (norms included; a tied LM head counted once)."""
        per_layer = (
            self.attention_params_per_layer
            + self.num_experts * self.expert_params
            + self.shared_mlp_params
            + self.router_params
            + 2 * self.hidden_size
        )
        embeddings = self.vocab_size * self.hidden_size
        head = 0 if self.tied_embeddings else self.lm_head_params
        return self.num_layers * per_layer + embeddings + head + self.hidden_size

    @property
    def active_matmul_params(self) -> int:
        """Parameters one token multiplies through (selected experts only, LM head included)."""
        per_layer = (
            self.attention_params_per_layer
            + self.experts_per_token * self.expert_params
            + self.shared_mlp_params
            + self.router_params
        )
        return self.num_layers * per_layer + self.lm_head_params

    @property
    def non_expert_params(self) -> int:
        """Parameters every token reads whatever experts it picks."""
        return self.total_params - self.num_layers * self.num_experts * self.expert_params

    @property
    def flops_per_token(self) -> int:
        """Matrix FLOPs per token, attention over the context excluded (2 per multiply-add)."""
        return 2 * self.active_matmul_params

    @property
    def attention_flops_per_token_per_context(self) -> int:
        """Extra FLOPs per token for each token of context it attends to (QK^T and AV)."""
        return 4 * self.num_layers * self.num_heads * self.head_dim

    def kv_bytes_per_token(self, dtype: Dtype) -> float:
        """KV-cache bytes one token of context occupies, all layers."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * BYTES_PER_ELEMENT[dtype]

    def weight_bytes(self, dtype: Dtype) -> float:
        return self.total_params * BYTES_PER_ELEMENT[dtype]


def fits_context(window: int | None, prompt_tokens: int, output_tokens: int) -> bool:
    """Whether a prompt and its output fit a context window of `window` tokens. An unknown
    window (the config gives no `max_position_embeddings`) admits any length."""
    return not window or prompt_tokens + output_tokens <= window


def check_context(spec: ModelSpec, prompt_tokens: int, output_tokens: int, *, field: str) -> None:
    """A ConfigError naming `field` when prompt and output do not fit `spec`'s
    context window: an engine refuses such a request, so no figure for it means anything."""
    if not fits_context(spec.max_context, prompt_tokens, output_tokens):
        raise ConfigError(
            f"{prompt_tokens} prompt + {output_tokens} output = "
            f"{prompt_tokens + output_tokens} tokens exceed {spec.id}'s context window of "
            f"{spec.max_context} tokens (max_position_embeddings); ask for fewer prompt or "
            "output tokens",
            field=field,
        )


def _line_of(text: str, key: str) -> int | None:
    match = re.search(rf'"{re.escape(key)}"\s*:', text)
    return None if match is None else text.count("\n", 0, match.start()) + 1


MAX_CONFIG_INT = 1 << 24  # any size past this in a config.json is a broken file, not a model


def _refuse_unmodelled(config: dict[str, Any], path: str, text: str) -> None:
    """Refuse, naming the field, an architecture the step and memory model do not describe,
    rather than model it as another: every layer alike, full attention, K and V per head."""

    def refuse(field: str, why: str) -> None:
        raise ConfigError(why, path=path, line=_line_of(text, field), field=field)

    if config.get("kv_lora_rank") is not None:  # DeepSeek-V2 and V3, Kimi K2
        refuse(
            "kv_lora_rank",
            "multi-head latent attention (MLA) is not modelled: its KV cache holds "
            "kv_lora_rank + qk_rope_head_dim numbers per token and layer, not K and V per "
            "head (DeepSeek-V3's would be counted 25x too large)",
        )
    window = config.get("sliding_window")
    if window is not None and config.get("use_sliding_window") is not False:  # Qwen2: false
        refuse(
            "sliding_window",
            f"sliding-window attention ({window!r:.20} tokens) is not modelled: the KV cache "
            "and attention of the whole context would be counted. Delete the field to model "
            "full attention (an upper bound on KV memory and attention time)",
        )
    kinds = config.get("layer_types")
    if isinstance(kinds, list) and len({str(k) for k in kinds}) > 1:  # Gemma 3, gpt-oss
        refuse("layer_types", "layers of several kinds are not modelled: every layer alike")
    for field, alike in (("first_k_dense_replace", 0), ("decoder_sparse_step", 1)):
        if config.get(field) not in (None, alike):  # some layers dense, the rest MoE
            refuse(
                field,
                f"dense and MoE layers mixed ({field}: {config[field]!r:.20}) are not "
                "modelled: every layer alike",
            )
    if config.get("mlp_only_layers"):
        refuse("mlp_only_layers", "dense and MoE layers mixed are not modelled: every layer alike")


def model_from_hf_config(
    config: dict[str, Any], model_id: str, path: str, text: str = ""
) -> ModelSpec:
    """Build a ModelSpec from a parsed Hugging Face config.json; errors name the field."""
    _refuse_unmodelled(config, path, text)

    def get(name: str, default: Any = None, required: bool = False) -> Any:
        for alias in _ALIASES.get(name, (name,)):
            if alias in config and config[alias] is not None:
                value = config[alias]
                if (
                    isinstance(value, bool)
                    or not isinstance(value, int)
                    or not 0 < value <= MAX_CONFIG_INT
                ):
                    raise ConfigError(
                        f"must be a positive integer up to {MAX_CONFIG_INT}, got {value!r}",
                        path=path,
                        line=_line_of(text, alias),
                        field=alias,
                    )
                return value
        if required:
            raise ConfigError(
                "missing; a decoder config.json needs hidden_size, num_hidden_layers, "
                "num_attention_heads, intermediate_size and vocab_size",
                path=path,
                field=name,
            )
        return default

    hidden = get("hidden_size", required=True)
    layers = get("num_hidden_layers", required=True)
    heads = get("num_attention_heads", required=True)
    kv_heads = get("num_key_value_heads", heads)
    if heads % kv_heads:
        raise ConfigError(
            f"num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv_heads})",
            path=path,
            line=_line_of(text, "num_key_value_heads"),
            field="num_key_value_heads",
        )
    experts = get("num_experts", 1)
    top_k = get("num_experts_per_tok", 1 if experts == 1 else 2)
    if experts > 1 and top_k > experts:
        raise ConfigError(
            f"{top_k} experts per token, but the model has {experts}",
            path=path,
            line=_line_of(text, "num_experts_per_tok"),
            field="num_experts_per_tok",
        )
    tied = config.get("tie_word_embeddings") or False
    if not isinstance(tied, bool):  # "false" is a non-empty string: true to bool()
        raise ConfigError(
            f"must be true or false, got {tied!r:.40}",
            path=path,
            line=_line_of(text, "tie_word_embeddings"),
            field="tie_word_embeddings",
        )
    ffn = get("intermediate_size", required=experts == 1)
    expert_ffn = get("moe_intermediate_size", ffn or 0)
    if not expert_ffn:  # experts of no size: a 47B Mixtral modelled as its 3 GB of attention
        raise ConfigError(
            f"missing; an MoE config.json ({experts} experts) needs its experts' FFN size "
            "(moe_intermediate_size, or intermediate_size where every expert is as wide)",
            path=path,
            field="intermediate_size",
        )
    shared_ffn = get("shared_expert_intermediate_size", 0)
    n_shared = get("n_shared_experts", 0)
    if n_shared and not shared_ffn:
        shared_ffn = n_shared * expert_ffn
    model_type = str(config.get("model_type", ""))
    max_pos = get("max_position_embeddings")
    head_dim = get("head_dim", hidden // heads)  # a null head_dim is absent, as HF reads it
    if head_dim < 1:
        raise ConfigError(
            f"hidden_size ({hidden}) is smaller than num_attention_heads ({heads}): a head "
            "would have no dimensions; give head_dim",
            path=path,
            line=_line_of(text, "num_attention_heads"),
            field="num_attention_heads",
        )
    return ModelSpec(
        id=model_id,
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=ffn or expert_ffn,
        vocab_size=get("vocab_size", required=True),
        tied_embeddings=tied,
        num_experts=experts,
        experts_per_token=min(top_k, experts),
        expert_intermediate_size=expert_ffn if experts > 1 else 0,
        shared_intermediate_size=shared_ffn,
        gated_mlp=model_type not in NON_GATED_MLP,
        max_context=max_pos if isinstance(max_pos, int) else None,
        source=str(config.get("_wattserve_source", path)),
    )


def _read_config(path: Path, model_id: str) -> ModelSpec:
    if path.is_dir():
        path = path / "config.json"
    text = read_text(path)
    config = parse_json(text, str(path))
    if not isinstance(config, dict):
        raise ConfigError("a config.json must hold one JSON object", path=str(path))
    return model_from_hf_config(config, model_id, str(path), text)


@cache
def _builtin_ids() -> tuple[str, ...]:
    folder = resources.files("wattserve") / "data" / "models"
    return tuple(
        sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json"))
    )


def builtin_model_ids() -> list[str]:
    """Ids of the models shipped with wattserve."""
    return list(_builtin_ids())


@cache
def _builtin(model_id: str) -> ModelSpec:
    ref = resources.files("wattserve") / "data" / "models" / f"{model_id}.json"
    with resources.as_file(ref) as p:
        return _read_config(p, model_id)


@cache
def model_aliases() -> dict[str, str]:
    """Hugging Face repository ids (lower case) of the built-in models: alias -> built-in id.
    Only repositories whose architecture fields equal the built-in's are listed."""
    ref = resources.files("wattserve") / "data" / "model-aliases.json"
    raw = json.loads(ref.read_text(encoding="utf-8"))["aliases"]
    return {str(k).lower(): str(v) for k, v in raw.items()}


def builtin_model_id(name: str) -> str | None:
    """The built-in model `name` is, by id or by alias (a Hugging Face repository id, in any
    case, as the Hub itself resolves them; an id in any case too); None when it is neither."""
    ids = _builtin_ids()
    if name in ids:
        return name
    lower = name.lower()
    if lower in ids:  # an id in another case, unless it names a local config (Qwen3-8B/)
        try:
            return None if Path(name).exists() else lower
        except OSError:
            return lower
    return model_aliases().get(lower)


def model_files(name: str) -> tuple[Path, ...]:
    """The file `load_model(name)` reads when `name` is a path (the config.json, or the one in
    the folder); none for a built-in id or alias. What an output must not replace."""
    if not name.strip() or builtin_model_id(name) is not None:
        return ()
    p = Path(name)
    try:
        if p.is_dir():
            return (p / "config.json",)
        return (p,) if p.exists() else ()
    except OSError:  # a name too long to be a path
        return ()


def load_model(name_or_path: str) -> ModelSpec:
    """A built-in model by id or alias, or any Hugging Face config.json (file or folder) by
    path."""
    known = _builtin_ids()
    builtin = builtin_model_id(name_or_path)
    if builtin is not None:
        return _builtin(builtin)
    if not name_or_path.strip():  # Path("") is the current folder: not what anyone meant
        raise ConfigError(
            "give a model id (see `wattserve models`) or a config.json path", field="model"
        )
    p = Path(name_or_path)
    try:
        exists = p.exists()
        is_path = exists or p.suffix == ".json"
    except OSError as exc:  # a name too long to be a path, say
        raise UnknownNameError("model", name_or_path[:200], known) from exc
    if is_path:
        if not exists:
            raise ConfigError("no such file", path=name_or_path)
        stem = p.parent.name if p.name == "config.json" else p.stem
        return _read_config(p, stem or name_or_path)
    raise UnknownNameError("model", name_or_path, known)
