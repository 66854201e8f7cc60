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
- transformers 5.17 fuses a MoE layer's experts and decompresses every layer's
  experts of a compressed-tensors checkpoint with one config group
  (``get_experts_scheme``), so a mixed-precision checkpoint whose layers' experts
  are in different groups fails deep in its weight conversion. That is read from
  config.json and the safetensors headers before transformers is called
  (:func:`check_expert_schemes`) and refused with :class:`ExpertSchemesError`.
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
    "ExpertSchemesError",
    "IncompleteCheckpointError",
    "LoadedModel",
    "check_expert_schemes",
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


class ExpertSchemesError(IncompleteCheckpointError):
    """transformers would decompress some MoE layer's experts with another config
    group's scheme (a RuntimeError in its weight conversion): refused up front."""


#: a per-expert linear module of the checkpoint: model.layers.L.mlp.experts.E.down_proj
_PER_EXPERT = re.compile(r"^(?P<block>.*\.experts)\.\d+\.[^.]+$")
_LAYER = re.compile(r"\blayers\.(\d+)\.")


def _matches(name: str, target: str) -> bool:
    if target.startswith("re:"):
        return re.match(target[3:], name) is not None
    return target == name


def _group_of(name: str, qconfig: dict[str, Any]) -> str | None:
    """The config group compressed-tensors gives a linear module (ignore first;
    then an exact name, a ``re:`` target, the class ``Linear``, in that order)."""
    if any(_matches(name, t) for t in qconfig.get("ignore") or []):
        return None
    groups = qconfig.get("config_groups") or {}
    for kind in ("name", "re", "class"):
        for key, group in groups.items():
            for t in group.get("targets") or []:
                hit = (
                    (kind == "name" and not t.startswith("re:") and t == name)
                    or (kind == "re" and t.startswith("re:") and _matches(name, t))
                    or (kind == "class" and t == "Linear")
                )
                if hit:
                    return str(key)
    return None


def _transformers_experts_group(qconfig: dict[str, Any]) -> str:
    """The one group transformers 5.17 decompresses every layer's experts with
    (``integrations/compressed_tensors.py::get_experts_scheme``)."""
    groups = qconfig["config_groups"]
    for key, group in groups.items():
        targets = group.get("targets") or []
        if any(t.startswith("re:") and "experts" in t for t in targets):
            return str(key)
    for key, group in groups.items():
        if any(not t.startswith("re:") for t in group.get("targets", [])):
            return str(key)
    return str(next(iter(groups)))


def _fuses_experts(model_type: object) -> bool:
    """Whether transformers merges this family's per-expert tensors at load time
    (only then does it use one experts scheme)."""
    try:
        from transformers.conversion_mapping import get_checkpoint_conversion_mapping

        mapping = get_checkpoint_conversion_mapping(str(model_type)) or []
    except (ImportError, AttributeError, KeyError, TypeError):
        return True
    return any(
        "experts" in str(getattr(conv, "source_patterns", "")) for conv in mapping
    )


def _layers(blocks: set[str]) -> str:
    nums = sorted({int(m[1]) for b in blocks if (m := _LAYER.search(b))})
    if not nums:
        return ", ".join(sorted(blocks))
    runs: list[list[int]] = []
    for n in nums:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    text = ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)
    return f"layer{'s' if len(nums) > 1 else ''} {text}"


def check_expert_schemes(path: str | Path) -> None:
    """Raise :class:`ExpertSchemesError` where transformers would read some MoE
    layer's experts of this compressed-tensors checkpoint with another layer's
    scheme: the experts are in several config groups of different schemes, or in
    one group that is not the one transformers picks. Read from config.json and
    the safetensors headers only (no weight is loaded); anything this check cannot
    read is left to transformers."""
    from transformers import __version__ as transformers_version

    from vsraq_modifier.serving.checkpoint import (
        CheckpointError,
        read_tensor_shapes,
        scheme_from_config_group,
    )

    try:
        config = json.loads((Path(path) / "config.json").read_text())
        qconfig = config.get("quantization_config") or {}
        if qconfig.get("quant_method") != "compressed-tensors":
            return
        groups = qconfig.get("config_groups")
        if not isinstance(groups, dict) or not groups:
            return
        if not _fuses_experts(config.get("model_type")):
            return
        shapes = read_tensor_shapes(Path(path))
    except (OSError, ValueError, AttributeError, CheckpointError):
        return  # transformers names what it cannot read
    blocks: dict[str, set[str]] = {}  # config group (None: unquantized) -> blocks
    for tensor in shapes:
        module, _, param = tensor.rpartition(".")
        hit = _PER_EXPERT.match(module)
        if hit and param in ("weight", "weight_packed"):
            group = _group_of(module, qconfig)
            blocks.setdefault(str(group), set()).add(hit["block"])
    fmt = qconfig.get("format")
    labels = {
        str(k): scheme_from_config_group(g, fmt).label() for k, g in groups.items()
    }
    labels["None"] = "unquantized"
    by_scheme: dict[str, set[str]] = {}
    for group, found in blocks.items():
        by_scheme.setdefault(labels[group], set()).update(found)
    picked = _transformers_experts_group(qconfig)
    if not by_scheme or set(by_scheme) == {"unquantized"}:
        return
    if set(by_scheme) == {labels[picked]}:
        return
    head = (
        f"{path}: transformers {transformers_version} reads every MoE layer's "
        "experts with one config group"
    )
    tail = (
        f"; vLLM reads each layer's own (vsraq check-serving {path}); to evaluate "
        "it on a CPU, reload AutoRound's fake export of the same run "
        "(format='fake')"
    )
    if len(by_scheme) > 1:
        shown = ", ".join(
            f"{label} in {_layers(found)}" for label, found in sorted(by_scheme.items())
        )
        raise ExpertSchemesError(
            f"{head}, and this compressed-tensors checkpoint has experts in "
            f"{len(by_scheme)} groups ({shown}){tail}"
        )
    ((label, found),) = by_scheme.items()
    raise ExpertSchemesError(
        f"{head}, here {picked} ({labels[picked]}), and this compressed-tensors "
        f"checkpoint's experts are in another ({label} in {_layers(found)}){tail}"
    )


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
    check_expert_schemes(path)
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
