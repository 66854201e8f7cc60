"""Tiny random models of each supported MoE family, built from configs in code.

For tests and plumbing checks only (no hub, a few hundred KB each): their routers are
random, so they show that code runs and computes the right thing, not how well a
method routes. ``tiny_model(family)`` is deterministic given ``seed``.
``tiny_dense_model()`` is a tiny Llama with no router at all: the model every
"unsupported model" check is tried on.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from transformers import PreTrainedModel

__all__ = [
    "TINY_FAMILIES",
    "tiny_config",
    "tiny_dense_config",
    "tiny_dense_model",
    "tiny_model",
]


def _qwen3_moe(**kw: Any) -> Any:
    from transformers import Qwen3MoeConfig

    base = dict(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=64,
        moe_intermediate_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        num_experts=8,
        num_experts_per_tok=2,
        norm_topk_prob=True,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )
    base.update(kw)
    return Qwen3MoeConfig(**base)


_ATTN = dict(
    vocab_size=128,
    hidden_size=64,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    tie_word_embeddings=False,
)


def _make(cls_name: str, base: dict[str, Any], kw: dict[str, Any]) -> Any:
    import transformers

    return getattr(transformers, cls_name)(**{**_ATTN, **base, **kw})


def _qwen2_moe(**kw: Any) -> Any:
    # layer 1 is dense (mlp_only_layers); shared expert + sigmoid shared gate
    base = dict(
        intermediate_size=64,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=32,
        num_hidden_layers=3,
        num_experts=8,
        num_experts_per_tok=2,
        norm_topk_prob=False,
        mlp_only_layers=[1],
    )
    return _make("Qwen2MoeConfig", base, kw)


def _mixtral(**kw: Any) -> Any:
    base = dict(
        intermediate_size=32,
        num_hidden_layers=2,
        head_dim=16,
        num_local_experts=4,
        num_experts_per_tok=2,
    )
    return _make("MixtralConfig", base, kw)


def _olmoe(**kw: Any) -> Any:
    base = dict(
        intermediate_size=32,
        num_hidden_layers=2,
        num_experts=8,
        num_experts_per_tok=2,
        eos_token_id=2,
    )
    return _make("OlmoeConfig", base, kw)


def _deepseek_like(cls_name: str, kw: dict[str, Any], **extra: Any) -> Any:
    # 16 experts in 4 groups, 2 groups kept, top-4; layer 0 dense
    base = dict(
        intermediate_size=64,
        moe_intermediate_size=32,
        num_hidden_layers=3,
        n_routed_experts=16,
        n_shared_experts=1,
        num_experts_per_tok=4,
        n_group=4,
        topk_group=2,
        first_k_dense_replace=1,
        norm_topk_prob=True,
        routed_scaling_factor=2.5,
    )
    return _make(cls_name, {**base, **extra}, kw)


def _deepseek_v3(**kw: Any) -> Any:
    mla = dict(
        q_lora_rank=32,
        kv_lora_rank=16,
        qk_rope_head_dim=8,
        qk_nope_head_dim=8,
        v_head_dim=16,
        num_key_value_heads=4,
    )
    return _deepseek_like("DeepseekV3Config", kw, **mla)


def _glm4_moe(**kw: Any) -> Any:
    return _deepseek_like("Glm4MoeConfig", kw, head_dim=16, routed_scaling_factor=1.5)


def _gpt_oss(**kw: Any) -> Any:
    base = dict(
        intermediate_size=32,
        num_hidden_layers=2,
        head_dim=16,
        num_local_experts=8,
        num_experts_per_tok=2,
        sliding_window=16,
        layer_types=["sliding_attention", "full_attention"],
        rope_parameters={"rope_type": "default", "rope_theta": 150000.0},
    )
    return _make("GptOssConfig", base, kw)


def _nemotron_h(**kw: Any) -> Any:
    # hybrid pattern "ME*E": Mamba-2, MoE, attention, MoE (torch Mamba path)
    base = dict(
        layers_block_type=["linear_attention", "moe", "full_attention", "moe"],
        intermediate_size=64,
        moe_intermediate_size=32,
        moe_shared_expert_intermediate_size=32,
        n_routed_experts=8,
        num_experts_per_tok=2,
        n_group=2,
        topk_group=1,
        routed_scaling_factor=2.0,
        head_dim=16,
        mamba_num_heads=4,
        mamba_head_dim=16,
        ssm_state_size=16,
        n_groups=2,
        chunk_size=16,
        use_mamba_kernels=False,
    )
    return _make("NemotronHConfig", base, kw)


#: family -> config factory (keyword overrides allowed)
TINY_FAMILIES: dict[str, Callable[..., Any]] = {
    "qwen3_moe": _qwen3_moe,
    "qwen2_moe": _qwen2_moe,
    "mixtral": _mixtral,
    "olmoe": _olmoe,
    "deepseek_v3": _deepseek_v3,
    "glm4_moe": _glm4_moe,
    "gpt_oss": _gpt_oss,
    "nemotron_h": _nemotron_h,
}


def tiny_config(family: str, **overrides: Any) -> Any:
    """A tiny config of ``family`` (see TINY_FAMILIES), with overrides applied."""
    if family not in TINY_FAMILIES:
        raise KeyError(f"no tiny config for {family!r}; known: {sorted(TINY_FAMILIES)}")
    return TINY_FAMILIES[family](**overrides)


def tiny_model(
    family: str, seed: int = 0, dtype: torch.dtype = torch.float32, **overrides: Any
) -> PreTrainedModel:
    """A randomly initialised tiny causal LM of ``family`` in eval mode."""
    from transformers import AutoModelForCausalLM

    config = tiny_config(family, **overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def tiny_dense_config(**overrides: Any) -> Any:
    """A tiny dense Llama config (no MoE, no router), with overrides applied; the
    same vocabulary and widths as the tiny MoE families."""
    from transformers import LlamaConfig

    base = dict(
        _ATTN,
        intermediate_size=64,
        num_hidden_layers=1,
        max_position_embeddings=64,
    )
    return LlamaConfig(**{**base, **overrides})


def tiny_dense_model(
    seed: int = 0, dtype: torch.dtype = torch.float32, **overrides: Any
) -> PreTrainedModel:
    """A randomly initialised tiny dense Llama causal LM in eval mode."""
    from transformers import AutoModelForCausalLM

    config = tiny_dense_config(**overrides)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
