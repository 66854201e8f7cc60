"""Reload an llm-compressor MoE checkpoint in transformers, experts intact.

``save_compressed`` writes each expert as its own linears
(``...experts.3.gate_proj.weight_packed``, ``weight_scale``, ...), the layout
vLLM reads. transformers 5.17 merges them into its fused expert tensors at load
time, decompressing each expert from ``weight_packed``/``weight_scale``/
``weight_shape`` only: NVFP4's ``weight_global_scale`` (and ``input_global_scale``)
are left over as unexpected keys and the experts come out scaled wrong (measured:
logits off by more than their own size). :func:`load_compressed` loads through
transformers, then rewrites every fused expert from the checkpoint with the
compressed-tensors decompressor, global scales included. Activation quantization
of the experts is not reproduced (the fused experts are not linears); attention
and other linears keep transformers' compressed-tensors forward.

FP4 formats decompress to bfloat16, so load them with ``dtype=torch.bfloat16``
(float32 fails in the linears' forward with a dtype mismatch).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from loguru import logger
from torch import nn

__all__ = ["load_compressed", "repair_experts"]

_EXPERT = re.compile(
    r"^(?P<experts>.+\.experts)\.(?P<index>\d+)\.(?P<proj>\w+)\.(?P<param>\w+)$"
)


def _checkpoint_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(path.glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    return tensors


def _scheme_for(name: str, config: Any) -> Any:
    """The config group whose targets match a (linear) module name."""
    for scheme in config.config_groups.values():
        for target in scheme.targets:
            if target == "Linear" or (
                target.startswith("re:") and re.match(target[3:], name)
            ):
                return scheme
    return None


def _decompressed_experts(
    tensors: dict[str, torch.Tensor], config: Any
) -> dict[str, dict[tuple[int, str], torch.Tensor]]:
    """{experts module name: {(expert, projection): decompressed weight}} for the
    experts whose checkpoint tensors include a global scale."""
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.compressors.format import infer_module_format

    grouped: dict[tuple[str, int, str], dict[str, torch.Tensor]] = defaultdict(dict)
    for key, value in tensors.items():
        m = _EXPERT.match(key)
        if m:
            grouped[(m["experts"], int(m["index"]), m["proj"])][m["param"]] = value
    out: dict[str, dict[tuple[int, str], torch.Tensor]] = defaultdict(dict)
    for (experts, index, proj), state in grouped.items():
        if "weight_global_scale" not in state:
            continue  # nothing that transformers drops: its own result stands
        scheme = _scheme_for(f"{experts}.{index}.{proj}", config)
        if scheme is None:
            continue
        fmt = scheme.format or infer_module_format(nn.Linear, scheme)
        compressor = BaseCompressor.get_value_from_registry(fmt)
        weight_keys = (
            "weight_packed",
            "weight",
            "weight_scale",
            "weight_global_scale",
            "weight_zero_point",
            "weight_shape",
            "weight_g_idx",
        )
        state = {k: v for k, v in state.items() if k in weight_keys}
        out[experts][(index, proj)] = compressor.decompress(state, scheme)["weight"]
    return out


@torch.no_grad()
def repair_experts(model: nn.Module, path: str | Path) -> int:
    """Rewrite the fused experts of ``model`` from the checkpoint at ``path``;
    returns how many expert modules were rewritten."""
    from compressed_tensors.quantization import QuantizationConfig
    from llmcompressor.modeling.moe.linear_experts import LinearExperts2D

    path = Path(path)
    qconfig = json.loads((path / "config.json").read_text()).get("quantization_config")
    if not qconfig:
        return 0
    config = QuantizationConfig.model_validate(qconfig)
    weights = _decompressed_experts(_checkpoint_tensors(path), config)
    done = 0
    for name, decompressed in weights.items():
        fused = model.get_submodule(name)
        if isinstance(fused, nn.ModuleList):
            continue  # linear experts: transformers loaded them as linears
        linear_cls = LinearExperts2D.get_linear_experts_cls(type(fused))
        text_config = model.config.get_text_config()
        linear = linear_cls.from_experts_module(fused, text_config)
        for (index, proj), weight in decompressed.items():
            target = getattr(linear[index], proj).weight
            target.copy_(weight.reshape(target.shape).to(target.dtype))
        for index in range(linear.num_experts):
            linear[index].copy_to_experts_module(fused, index)
        done += 1
    return done


def load_compressed(
    path: str | Path, dtype: torch.dtype = torch.bfloat16, **kwargs: Any
) -> nn.Module:
    """``AutoModelForCausalLM.from_pretrained`` of an llm-compressor checkpoint,
    with the MoE experts decompressed correctly (see the module docstring)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs)
    n = repair_experts(model, path)
    logger.debug(f"vsraq: rewrote {n} fused expert modules from {path}")
    return model.eval()
