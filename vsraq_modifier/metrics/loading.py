"""Load a reference or quantized checkpoint for evaluation, refusing partial loads.

- Plain transformers checkpoints and compressed-tensors ones (llm-compressor's
  ``save_compressed``) load through transformers itself (its compressed-tensors
  integration dequantizes the fused experts at load time; other layers decompress on
  the first forward pass).
- AutoRound's ``auto_round`` format needs auto-round installed; transformers imports
  it when the checkpoint's ``quantization_config.quant_method`` says ``auto-round``.
  That import rewrites the model's MoE blocks (``LinearQwen3MoeSparseMoeBlock``) and,
  on transformers 5, drops the MoE weight-merge conversion of the model type
  *globally*, so a fused checkpoint loaded afterwards would lose its experts. The
  conversion table is restored after each such load.
- Some host exports load in transformers with weights silently left random (e.g.
  AutoRound ``--format fake`` of Mixtral on transformers 5.17: per-expert tensors
  that the fused loader does not map). Every load is checked with
  ``output_loading_info``: any missing, unexpected or mismatched tensor refuses the
  checkpoint with :class:`IncompleteCheckpointError`, naming the tensors.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from loguru import logger
from torch import nn

from vsraq_modifier.metrics.evaluate import model_dtype
from vsraq_modifier.transformers_seams import conversion_mapping_restored

__all__ = [
    "CheckpointFormatError",
    "IncompleteCheckpointError",
    "LoadedModel",
    "check_loading_info",
    "checkpoint_quant_method",
    "load_model",
    "load_token_ids",
    "resolve_dtype",
]

_DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
_SHOWN = 20


class IncompleteCheckpointError(RuntimeError):
    """The checkpoint did not fill every weight of the model (or left some unused)."""


@dataclass
class LoadedModel:
    model: nn.Module
    path: str
    dtype: str
    quant_method: str | None


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """``auto``: bfloat16 on an accelerator, float32 on a CPU."""
    if name == "auto":
        return torch.float32 if torch.device(device).type == "cpu" else torch.bfloat16
    if name not in _DTYPES:
        raise ValueError(f"dtype {name!r}: use auto, {', '.join(_DTYPES)}")
    return _DTYPES[name]


def checkpoint_quant_method(path: str | Path) -> str | None:
    """``quantization_config.quant_method`` of a checkpoint directory (None if the
    checkpoint is not quantized)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        raise FileNotFoundError(
            f"{path}: no config.json; pass a checkpoint directory written by "
            "save_pretrained, llm-compressor or AutoRound"
        )
    qc = json.loads(config.read_text()).get("quantization_config") or {}
    method = qc.get("quant_method")
    return str(method) if method else None


def _needs_auto_round(method: str | None) -> bool:
    return method is not None and method.replace("_", "-") in {
        "auto-round",
        "intel/auto-round",
    }


def _names(keys: Any) -> list[str]:
    out = []
    for k in keys:
        # mismatched_keys holds (name, checkpoint shape, model shape) tuples
        out.append(
            f"{k[0]} {tuple(k[1])} vs {tuple(k[2])}" if isinstance(k, tuple) else str(k)
        )
    return sorted(out)


def check_loading_info(info: dict[str, Any], path: str | Path) -> None:
    """Raise :class:`IncompleteCheckpointError` unless every tensor loaded."""
    problems = {
        "missing from the checkpoint (left randomly initialised)": _names(
            info.get("missing_keys", ())
        ),
        "in the checkpoint but not loaded into the model": _names(
            info.get("unexpected_keys", ())
        ),
        "of the wrong shape (checkpoint vs model)": _names(
            info.get("mismatched_keys", ())
        ),
        "errors": [str(e) for e in info.get("error_msgs", ())],
    }
    problems = {k: v for k, v in problems.items() if v}
    if not problems:
        return
    lines = [
        f"{path}: not every weight loaded; refusing to evaluate a model with "
        "random or unused weights."
    ]
    for what, names in problems.items():
        shown = ", ".join(names[:_SHOWN])
        more = f" ... and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
        lines.append(f"  {len(names)} tensors {what}: {shown}{more}")
    lines.append(
        "  Export the checkpoint in a format transformers maps completely "
        "(AutoRound: --format auto_round; llm-compressor: save_compressed), or "
        "convert its tensor names to the model's."
    )
    raise IncompleteCheckpointError("\n".join(lines))


class CheckpointFormatError(ValueError):
    """A checkpoint in a format that has no kernel to run it here."""


@contextlib.contextmanager
def _no_kernel_is_an_export_error(path: str, method: str | None) -> Iterator[None]:
    """auto-round's loader raises ``No compatible backend found for layer ...``
    when none of its kernels runs the checkpoint's layers on this device (e.g.
    groups that do not tile a CPU kernel's width); say which export loads."""
    try:
        yield
    except ValueError as e:
        if not _needs_auto_round(method) or "No compatible backend" not in str(e):
            raise
        text = str(e).removeprefix("No compatible backend found for layer ")
        layer, _, scheme = text.partition(" with config ")
        found = re.findall(r"\b(bits|group_size)=(\d+)", scheme)
        shown = ", ".join(f"{k} {v}" for k, v in found)
        raise CheckpointFormatError(
            f"{path}: auto-round has no kernel on this device for layer {layer} of "
            f"this auto_round checkpoint ({shown}); export it with --format "
            "llm_compressor (compressed-tensors, which transformers runs on a CPU), "
            "or --format fake where the group size does not divide a layer's width"
        ) from None


def load_model(
    path: str | Path, *, dtype: str = "auto", device: str = "cpu"
) -> LoadedModel:
    """Load a causal LM checkpoint directory for evaluation (eval mode, no grad).

    ``dtype`` is what is asked for; the loaded model may run in another one (the
    auto-round CPU backends force float16), which :attr:`LoadedModel.dtype` reports.
    """
    from transformers import AutoModelForCausalLM

    path = str(path)
    method = checkpoint_quant_method(path)
    if _needs_auto_round(method):
        try:
            importlib.import_module("auto_round")
        except ImportError as e:
            raise ImportError(
                f"{path} is an auto_round-format checkpoint; loading it needs "
                "auto-round: pip install 'auto-round==0.15.1'"
            ) from e
    want = resolve_dtype(dtype, device)
    with conversion_mapping_restored(), _no_kernel_is_an_export_error(path, method):
        model, info = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=want,
            device_map=device,
            output_loading_info=True,
            ignore_mismatched_sizes=True,  # reported (and refused) below instead
        )
    check_loading_info(info, path)
    model.eval()
    got, asked = model_dtype(model), str(want).removeprefix("torch.")
    if got != asked:
        logger.warning(
            "{} runs in {} (asked for {}): its loader chose the dtype", path, got, asked
        )
    return LoadedModel(model=model, path=path, dtype=got, quant_method=method)


#: files of which a saved tokenizer has at least one
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
)


def load_token_ids(
    text_path: str | Path,
    tokenizer_path: str | Path,
    max_tokens: int | None = None,
    *,
    what: str = "text",
) -> torch.Tensor:
    """Token ids [N] of a UTF-8 text file (no special tokens added), at most
    ``max_tokens``. ``what`` names the file in errors (e.g. ``--text``): an empty,
    binary or non-UTF-8 file raises :class:`~vsraq_modifier.inputs.TextFileError`
    with the byte where it broke."""
    from transformers import AutoTokenizer

    from vsraq_modifier.inputs import TextFileError, decode_text

    text = decode_text(Path(text_path).expanduser().absolute(), what, TextFileError)
    missing = FileNotFoundError(
        f"no tokenizer in {tokenizer_path}; save one next to the reference "
        "(tokenizer.save_pretrained) or pass --tokenizer"
    )
    folder = Path(tokenizer_path)
    # transformers 5 builds an empty tokenizer from a bare config.json
    if folder.is_dir() and not any((folder / n).is_file() for n in _TOKENIZER_FILES):
        raise missing
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_path))
    except (OSError, ValueError) as e:
        raise missing from e
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    if max_tokens is not None:
        ids = ids[:max_tokens]
    return torch.tensor(ids, dtype=torch.long)
