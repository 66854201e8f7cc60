"""The units that ``vsraq allocate`` gives one scheme each, found in a transformers
MoE model (any family with a router adapter).

Per decoder layer ``l``:

- ``layers.l.experts``: every routed expert of the MoE block (the fused 3-D expert
  tensors of transformers 5). vLLM's fused-MoE kernels take one scheme per MoE
  layer, so this is the default unit; ``unit="expert"`` splits it into
  ``layers.l.expert.e`` (not servable by vLLM's fused MoE).
- ``layers.l.shared``: the MoE block's other linears (shared experts), if any.
- ``layers.l.<attr>``: the layer's linears outside the MoE block, one unit per
  top-level attribute (``attention`` for ``self_attn``, ``dense_mlp`` for the MLP of
  a dense layer, ``mixer`` for a non-MoE mixer).

Kept out, as in the project's recipes (recipes/*.yaml): ``lm_head``, embeddings,
routers, Qwen2-MoE's ``shared_expert_gate``, Nemotron-H's Mamba projections.
Each unit carries the regular expressions of the module names the hosts quantize
(AutoRound and llm-compressor both unfuse experts into ``experts.<e>.<proj>``
linears; a fused ``gate_up_proj`` becomes ``gate_proj`` and ``up_proj``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from vsraq_modifier.routers.base import RouterSite, decoder_layers
from vsraq_modifier.routers.registry import adapter_for, find_routers

__all__ = [
    "FAMILY_IGNORE",
    "UnitMode",
    "Unit",
    "WeightPart",
    "find_units",
    "ignore_patterns",
    "ignored_linears",
    "parameter",
    "unit_widths",
]

UnitMode = Literal["layer", "expert"]

#: family -> module-name patterns kept in full precision (recipes/<family>_w4a16.yaml)
FAMILY_IGNORE: dict[str, tuple[str, ...]] = {
    "qwen3_moe": ("lm_head", "re:.*mlp.gate$"),
    "qwen2_moe": ("lm_head", "re:.*mlp.gate$", "re:.*mlp.shared_expert_gate$"),
    "mixtral": ("lm_head", "re:.*mlp.gate$"),
    "olmoe": ("lm_head", "re:.*mlp.gate$"),
    "deepseek_v3": ("lm_head", "re:.*mlp.gate$"),
    "glm4_moe": ("lm_head", "re:.*mlp.gate$"),
    "gpt_oss": ("lm_head", "re:.*mlp.router$"),
    "nemotron_h": (
        "lm_head",
        "re:.*mixer.gate$",
        "re:.*mixer.in_proj$",
        "re:.*mixer.out_proj$",
    ),
}

_KIND_OF_ATTR = {"self_attn": "attention", "attn": "attention", "mlp": "dense_mlp"}


@dataclass(frozen=True)
class WeightPart:
    """One weight matrix of a unit: a linear's weight, or one expert's slice of a
    fused expert tensor (``expert`` set; ``transposed``: stored [in, out])."""

    param: str
    in_features: int
    out_features: int
    expert: int | None = None
    transposed: bool = False
    kind: str = ""  # projection name, for tiling messages (e.g. "down_proj")

    @property
    def numel(self) -> int:
        return self.in_features * self.out_features


@dataclass(frozen=True)
class Unit:
    """One allocation decision; ``patterns`` match (``re.match``) the names of the
    host modules it covers."""

    name: str
    layer: int
    kind: str
    parts: tuple[WeightPart, ...]
    patterns: tuple[str, ...]
    expert: int | None = None

    @property
    def numel(self) -> int:
        return sum(p.numel for p in self.parts)


def ignore_patterns(family: str) -> tuple[str, ...]:
    return FAMILY_IGNORE.get(family, ("lm_head",))


def _ignored(name: str, patterns: tuple[str, ...]) -> bool:
    for p in patterns:
        if p.startswith("re:"):
            if re.match(p[3:], name):
                return True
        elif name == p or name.endswith("." + p):
            return True
    return False


def _layers_prefix(model: nn.Module) -> str:
    layers = decoder_layers(model)
    for name, module in model.named_modules():
        if module is layers:
            return name
    raise ValueError(f"{type(model).__name__}: decoder layer list not found by name")


def _host_projs(param: str) -> str:
    """The linears a fused expert tensor becomes in the hosts."""
    if param == "gate_up_proj":
        return "(gate_proj|up_proj|gate_up_proj)"
    return re.escape(param)


def _expert_parts(
    prefix: str, experts: nn.Module, expert: int | None
) -> list[WeightPart]:
    transposed = bool(getattr(experts, "is_transposed", False))
    parts = []
    for pname, p in experts.named_parameters(recurse=False):
        if p.dim() != 3:
            continue  # biases
        rows, cols = p.shape[1], p.shape[2]
        in_f, out_f = (rows, cols) if transposed else (cols, rows)
        idx = range(p.shape[0]) if expert is None else [expert]
        for e in idx:
            parts.append(
                WeightPart(f"{prefix}.{pname}", in_f, out_f, e, transposed, pname)
            )
    return parts


def _expert_pattern(prefix: str, experts: nn.Module, expert: int | None) -> str:
    projs = [
        _host_projs(n)
        for n, p in experts.named_parameters(recurse=False)
        if p.dim() == 3
    ]
    e = r"\d+" if expert is None else str(expert)
    return rf"^{re.escape(prefix)}\.{e}\.({'|'.join(projs)})$"


def _linear_unit(
    name: str, layer: int, kind: str, linears: list[tuple[str, nn.Linear]]
) -> Unit:
    parts = tuple(
        WeightPart(
            f"{n}.weight", m.in_features, m.out_features, kind=n.rsplit(".", 1)[-1]
        )
        for n, m in linears
    )
    names = "|".join(re.escape(n) for n, _ in linears)
    return Unit(name, layer, kind, parts, (rf"^({names})$",))


def find_units(model: nn.Module, mode: UnitMode = "layer") -> list[Unit]:
    """Every unit of ``model`` in layer order (raises UnsupportedModelError for a
    model without MoE routers)."""
    if mode not in ("layer", "expert"):
        raise ValueError(f"unit mode {mode!r}: use 'layer' or 'expert'")
    sites: dict[int, RouterSite] = {s.layer: s for s in find_routers(model)}
    ignore = ignore_patterns(adapter_for(model).family)
    root = _layers_prefix(model)
    units: list[Unit] = []
    for i, layer in enumerate(decoder_layers(model)):
        lp = f"{root}.{i}"
        site = sites.get(i)
        block_attr = site.name.split(".")[0] if site else None
        outside: dict[str, list[tuple[str, nn.Linear]]] = {}
        shared: list[tuple[str, nn.Linear]] = []
        for n, m in layer.named_modules():
            if not isinstance(m, nn.Linear) or _ignored(f"{lp}.{n}", ignore):
                continue
            if site is not None and m is site.router:
                continue
            top = n.split(".")[0]
            if top == block_attr:
                if not n.startswith(f"{block_attr}.experts."):
                    shared.append((f"{lp}.{n}", m))
            else:
                outside.setdefault(top, []).append((f"{lp}.{n}", m))
        for top, linears in outside.items():
            kind = _KIND_OF_ATTR.get(top, top)
            units.append(_linear_unit(f"layers.{i}.{kind}", i, kind, linears))
        if site is not None:
            experts = getattr(site.block, "experts", None)
            if not isinstance(experts, nn.Module) or not any(
                p.dim() == 3 for p in experts.parameters(recurse=False)
            ):
                raise ValueError(
                    f"layer {i}: the MoE block has no fused 3-D expert tensors "
                    "(transformers 5 layout); load the model with stock transformers"
                )
            ep = f"{lp}.{block_attr}.experts"
            count = next(p for p in experts.parameters(recurse=False) if p.dim() == 3)
            which = [None] if mode == "layer" else list(range(count.shape[0]))
            for e in which:
                name = f"layers.{i}.experts" if e is None else f"layers.{i}.expert.{e}"
                kind = "experts" if e is None else "expert"
                parts = tuple(_expert_parts(ep, experts, e))
                pattern = _expert_pattern(ep, experts, e)
                units.append(Unit(name, i, kind, parts, (pattern,), e))
            if shared:
                units.append(_linear_unit(f"layers.{i}.shared", i, "shared", shared))
    return units


def unit_widths(units: list[Unit]) -> dict[str, int]:
    """Input width of every kind of weight matrix (for the tiling check)."""
    widths: dict[str, int] = {}
    for u in units:
        for p in u.parts:
            key = f"{u.kind} {p.kind}" if p.kind else u.kind
            widths.setdefault(f"{key} (layer {u.layer})", p.in_features)
    return widths


def parameter(model: nn.Module, part: WeightPart) -> torch.Tensor:
    """The tensor a part lives in (the fused expert tensor for an expert slice)."""
    return model.get_parameter(part.param)


def ignored_linears(model: nn.Module) -> list[str]:
    """Names of the decoder layers' linears kept in full precision (routers, the
    family's recipe ignore list): AutoRound would quantize them by default."""
    sites = {s.layer: s for s in find_routers(model)}
    ignore = ignore_patterns(adapter_for(model).family)
    root = _layers_prefix(model)
    names = []
    for i, layer in enumerate(decoder_layers(model)):
        site = sites.get(i)
        for n, m in layer.named_modules():
            full = f"{root}.{i}.{n}"
            if isinstance(m, nn.Linear) and (
                _ignored(full, ignore) or (site is not None and m is site.router)
            ):
                names.append(full)
    return names
