"""Read a compressed-tensors checkpoint the way vLLM resolves its schemes, without
loading a weight, and apply :mod:`vsraq_modifier.serving.rules` to each MoE layer.

Tensor names and shapes come from the safetensors headers; each linear module's
scheme comes from ``quantization_config`` (``ignore`` first, then the first config
group whose targets match: an exact name, ``re:`` regex or the class ``Linear``),
as in vLLM's ``compressed_tensors/utils.py`` (``find_matched_target``,
``should_ignore_layer``). AutoRound's own format is refused with the export to use:
vLLM's AutoRound (INC) path has other rules, not encoded here.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

from vsraq_modifier.serving.rules import (
    UNQUANTIZED,
    LayerReport,
    Scheme,
    ServingReport,
    check_moe_layer,
)

__all__ = [
    "EXPERT_PROJECTIONS",
    "CheckpointError",
    "check_checkpoint",
    "read_tensor_shapes",
    "scheme_from_config_group",
]

EXPERT_PROJECTIONS = {
    "gate_proj": "hidden", "up_proj": "hidden", "down_proj": "intermediate",
    "w1": "hidden", "w3": "hidden", "w2": "intermediate",
}  # fmt: skip
_EXPERT = re.compile(r"^(?P<parent>.*\blayers\.(?P<layer>\d+)\..*)\.experts\.")


class CheckpointError(ValueError):
    """The path is not a checkpoint this check can read (named in the message)."""


def scheme_from_config_group(
    group: dict[str, Any], default_format: str | None
) -> Scheme:
    """A compressed-tensors ``config_groups`` entry as a :class:`Scheme`."""
    weights = group.get("weights") or {}
    if not weights:
        return UNQUANTIZED
    acts = group.get("input_activations") or {}
    strategy = weights.get("strategy")
    group_size = weights.get("group_size")
    if strategy in ("channel", "tensor") or group_size is None:
        group_size = -1
    fmt = group.get("format") or default_format
    return Scheme(
        bits=int(weights["num_bits"]),
        type=str(weights.get("type", "int")),
        group_size=int(group_size),
        symmetric=bool(weights.get("symmetric", True)),
        actorder=weights.get("actorder") or None,
        act_bits=int(acts["num_bits"]) if acts else None,
        act_type=str(acts.get("type", "int")) if acts else None,
        format=None if fmt == "mixed-precision" else fmt,
        strategy=strategy,
    )


def read_tensor_shapes(path: Path) -> dict[str, tuple[str, list[int]]]:
    """tensor name -> (dtype, shape) from the headers of ``path``'s *.safetensors
    files (the first 8 bytes give the JSON header's length; weights stay on disk)."""
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise CheckpointError(
            f"{path}: no *.safetensors files; pass a checkpoint "
            "directory saved with save_pretrained"
        )
    shapes: dict[str, tuple[str, list[int]]] = {}
    for file in files:
        try:
            with file.open("rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(min(n, 1 << 28)))
            header.pop("__metadata__", None)
            shapes.update(
                {k: (str(v["dtype"]), list(v["shape"])) for k, v in header.items()}
            )
        except (
            OSError,
            struct.error,
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
        ) as e:
            raise CheckpointError(
                f"{file}: unreadable safetensors header ({type(e).__name__}: {e})"
            ) from None
    return shapes


def _modules(
    shapes: dict[str, tuple[str, list[int]]],
) -> dict[str, dict[str, list[int]]]:
    """linear module name -> {parameter: shape} (2-D weight or packed weight)."""
    params: dict[str, dict[str, list[int]]] = {}
    for name, (_dtype, shape) in shapes.items():
        module, _, param = name.rpartition(".")
        params.setdefault(module, {})[param] = shape
    return {
        m: p
        for m, p in params.items()
        if "weight_packed" in p or len(p.get("weight", [])) == 2
    }


def _name_matches(name: str, target: str) -> bool:
    if target.startswith("re:"):
        return re.match(target[3:], name) is not None
    return target == name


class _Resolver:
    """Scheme of a linear module from quantization_config, as vLLM resolves it
    (``compressed_tensors/utils.py``: ``should_ignore_layer``, then
    ``find_matched_target``): ignored if a name or ``re:`` entry of ``ignore``
    matches; else the first target, in config order, that matches the name (exact
    or ``re:``), else the first class target (``Linear``: every linear module)."""

    def __init__(self, qconfig: dict[str, Any]) -> None:
        self.ignore = list(qconfig.get("ignore") or [])
        fmt = qconfig.get("format")
        self.targets = [
            (target, scheme_from_config_group(g, fmt))
            for g in (qconfig.get("config_groups") or {}).values()
            for target in g.get("targets") or []
        ]

    def __call__(self, name: str) -> Scheme:
        if any(_name_matches(name, t) for t in self.ignore):
            return UNQUANTIZED
        for target, scheme in self.targets:
            if _name_matches(name, target):
                return scheme
        for target, scheme in self.targets:
            if target == "Linear":
                return scheme
        return UNQUANTIZED


def _load_config(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a directory; pass a checkpoint directory")
    file = path / "config.json"
    if not file.is_file():
        raise CheckpointError(
            f"{path}: no config.json; pass a checkpoint directory "
            "saved with save_pretrained"
        )
    try:
        config = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{file}: unreadable config ({e})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{file}: not a JSON object")
    if isinstance(config.get("text_config"), dict):  # multimodal wrappers
        config = {**config["text_config"], **config}
    return config


def _quant_config(config: dict[str, Any], path: Path) -> dict[str, Any]:
    qconfig = config.get("quantization_config") or {}
    if not isinstance(qconfig, dict):
        raise CheckpointError(
            f"{path}/config.json: quantization_config is not an object"
        )
    method = qconfig.get("quant_method", "compressed-tensors" if not qconfig else None)
    if method in ("auto-round", "auto_round", "intel/auto-round"):
        raise CheckpointError(
            f"{path} is an auto_round-format checkpoint; check-serving reads the "
            "compressed-tensors form vLLM serves MoE checkpoints in: export with "
            "format='llm_compressor' (auto-round --format llm_compressor) and check "
            "that directory"
        )
    if method != "compressed-tensors":
        raise CheckpointError(
            f"{path}: quant_method {method!r}; check-serving reads "
            "compressed-tensors checkpoints (llm-compressor, or AutoRound's "
            "llm_compressor export)"
        )
    return qconfig


def check_checkpoint(
    path: str | Path, *, tensor_parallel_size: int = 1
) -> ServingReport:
    """Apply vLLM's rules to every MoE layer of the checkpoint at ``path``, served
    on ``tensor_parallel_size`` GPUs (each rank holds 1/N of every expert's
    intermediate width, and the rules apply to that slice). Raises
    :class:`CheckpointError` for anything that is not a readable MoE checkpoint in
    compressed-tensors form (or unquantized)."""
    if tensor_parallel_size < 1:
        raise CheckpointError(f"tensor_parallel_size={tensor_parallel_size}: use >= 1")
    path = Path(path)
    config = _load_config(path)
    qconfig = _quant_config(config, path)
    shapes = read_tensor_shapes(path)
    modules = _modules(shapes)
    resolve = _Resolver(qconfig)
    layers: dict[int, dict[str, Any]] = {}
    for name in modules:
        m = _EXPERT.match(name)
        if m:
            entry = layers.setdefault(
                int(m["layer"]), {"parent": m["parent"], "experts": []}
            )
            entry["experts"].append(name)
    fused = {n.rpartition(".")[0] for n in shapes}  # transformers' 3-D experts
    for name in (k for k in fused if k.endswith(".experts")):
        m = re.match(r"^(?P<parent>.*\blayers\.(?P<layer>\d+)\..*)\.experts$", name)
        if m:
            layers.setdefault(int(m["layer"]), {"parent": m["parent"], "experts": []})
    if not layers:
        raise CheckpointError(
            f"{path}: no MoE experts in its tensors ({config.get('model_type')!r} "
            "looks dense); check-serving checks MoE checkpoints"
        )
    reports = []
    for index in sorted(layers):
        parent, experts = layers[index]["parent"], layers[index]["experts"]
        reports.append(
            _check_layer(
                index, parent, experts, modules, resolve, config, tensor_parallel_size
            )
        )
    return ServingReport(
        path=str(path),
        tensor_parallel_size=tensor_parallel_size,
        model_type=str(config.get("model_type")),
        quant_method=str(qconfig.get("quant_method", "none (unquantized)")),
        layers=reports,
    )


def _check_layer(
    index: int,
    parent: str,
    experts: list[str],
    modules: dict[str, dict[str, list[int]]],
    resolve: _Resolver,
    config: dict[str, Any],
    tp: int,
) -> LayerReport:
    hidden = int(config.get("hidden_size", 0))
    intermediate = int(
        config.get("moe_intermediate_size") or config.get("intermediate_size") or 0
    )
    schemes, tensor_problems = [], []
    for name in experts:
        proj = name.rsplit(".", 1)[-1]
        if proj not in EXPERT_PROJECTIONS:
            continue
        scheme = resolve(name)
        schemes.append(scheme)
        rows = modules[name].get("weight_packed", modules[name].get("weight"))[0]
        if EXPERT_PROJECTIONS[proj] == "hidden":
            intermediate = rows
        else:
            hidden = rows
        if scheme.quantized != ("weight_scale" in modules[name]):
            tensor_problems.append(
                f"{name}: config says {scheme.label()} but its tensors "
                f"{'lack' if scheme.quantized else 'have'} weight_scale; "
                "the config does not describe this checkpoint"
            )
    prefix = parent.rsplit(".", 1)[0]
    attention = {
        n: resolve(n)
        for n in modules
        if n.startswith(prefix + ".")
        and ".experts." not in n
        and re.search(r"\.(self_attn|attention)\.", n)
    }
    router = next(
        (
            resolve(f"{parent}.{r}")
            for r in ("gate", "router")
            if f"{parent}.{r}" in modules
        ),
        UNQUANTIZED,
    )
    if intermediate % tp:  # else each rank holds 1/tp of every expert
        tensor_problems.append(
            f"layer {index}: intermediate {intermediate} does not split over {tp} "
            "tensor-parallel ranks"
        )
    report = check_moe_layer(
        index,
        schemes or [UNQUANTIZED],
        hidden,
        intermediate // tp if intermediate % tp == 0 else intermediate,
        router=router,
        attention=attention,
    )
    if tensor_problems:
        report.problems.extend(tensor_problems[:3])
        report.status, report.kernel = "not servable", None
    return report
