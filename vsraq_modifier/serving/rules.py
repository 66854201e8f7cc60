"""vLLM's serving rules for quantized MoE layers, in one place.

A checkpoint that vLLM refuses is found here before anyone rents a GPU: the rules
below decide, per MoE layer, whether vLLM's fused-MoE code takes the layer's expert
scheme and with which kernel family, and say what to change when it does not. Used by
``vsraq check-serving`` and meant for any feature that chooses schemes per layer
(call :func:`moe_kernel` or :func:`check_moe_layer` on a candidate).

Read from vLLM's repository, main branch, 2026 snapshots (after v0.17.0; the
release that first shipped each line was not pinned here, so check a refusal
against the vLLM you install):

- ``vllm/model_executor/layers/quantization/compressed_tensors/compressed_tensors_moe/
  compressed_tensors_moe.py`` (``get_moe_method``, commit 0043d6b5): the scheme of
  a fused MoE layer is expert 0's gate/up/down and the three must match; W*A16 int
  needs format ``pack-quantized`` and bits in ``WNA16_SUPPORTED_BITS`` = [4, 8];
  Marlin when ``check_moe_marlin_supports_layer`` holds, else the Triton WNA16
  method (group strategy, symmetric, no activation order: ``compressed_tensors_moe_
  wna16.py``, commit 0072125a, with ``dim // group_size`` groups); activation-order
  groups raise where Marlin cannot run; MXFP4 and NVFP4 (A4 or A16) have their own
  methods; FP8 W8A8 and int8 W8A8 (dynamic per token) too; anything else raises
  "Unsupported FusedMoe scheme".
- ``.../compressed_tensors/compressed_tensors.py``: ``_is_nvfp4_format`` (float, 4
  bits, symmetric, tensor_group of 16) and ``_is_mxfp4`` (float, 4 bits, symmetric,
  groups of 32).
- ``vllm/model_executor/layers/quantization/utils/marlin_utils.py`` (commit
  007d5005): ``check_moe_marlin_supports_layer``: group size -1, 32, 64 or 128,
  hidden_size % 128 == 0, intermediate_size % max(64, group_size) == 0.
- ``vllm/model_executor/layers/fused_moe/oracle/int_wna16.py`` (commit 0043d6b5):
  the optional Humming backend (``--moe-backend humming``, a separate package) is
  the only route for int2 MoE; int3/5/6/7 MoE are open pull requests.

Every expert of one layer shares one packed tensor, so it needs one scheme; layers
may differ. Routers are expected in full precision (this project's contract: the
router decides the expert path).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "KernelVerdict",
    "LayerReport",
    "MARLIN_GROUPS",
    "Scheme",
    "ServingReport",
    "UNQUANTIZED",
    "WNA16_BITS",
    "check_moe_layer",
    "moe_kernel",
]

WNA16_BITS = (4, 8)
MARLIN_GROUPS = (-1, 32, 64, 128)
OPTIONAL_KERNEL_BITS = (2,)
PACK_QUANTIZED = "pack-quantized"
_ATTENTION_QKV = ("q_proj", "k_proj", "v_proj")


@dataclass(frozen=True)
class Scheme:
    """One weight quantization scheme as vLLM sees it. ``bits`` None: unquantized.
    ``group_size`` -1: per channel (or per tensor for FP8). ``act_bits`` None:
    16-bit activations."""

    bits: int | None = None
    type: str = "int"
    group_size: int | None = None
    symmetric: bool = True
    actorder: str | None = None
    act_bits: int | None = None
    act_type: str | None = None
    format: str | None = None
    strategy: str | None = None

    @property
    def quantized(self) -> bool:
        return self.bits is not None

    def label(self) -> str:
        if not self.quantized:
            return "unquantized"
        if self.type == "float" and self.bits == 4:
            name = "NVFP4" if self.strategy == "tensor_group" else "MXFP4"
            return name + ("" if self.act_bits else "A16")
        act = f"A{self.act_bits}" if self.act_bits else "A16"
        kind = "FP" if self.type == "float" else "W"
        group = "" if self.group_size in (None, -1) else f" g{self.group_size}"
        if self.group_size == -1 and self.strategy == "channel":
            group = " channel"
        extras = "" if self.symmetric else " asym"
        extras += f" actorder={self.actorder}" if self.actorder else ""
        return f"{kind}{self.bits}{act}{group}{extras} {self.format or '?'}"


UNQUANTIZED = Scheme()


@dataclass(frozen=True)
class KernelVerdict:
    """What vLLM does with one MoE layer's expert scheme. ``status``: "servable",
    "needs optional kernel" or "not servable"; ``kernel`` names the family."""

    status: str
    kernel: str | None = None
    reason: str | None = None

    @property
    def servable(self) -> bool:
        return self.status == "servable"


def _refused(reason: str) -> KernelVerdict:
    return KernelVerdict("not servable", None, reason)


def moe_kernel(scheme: Scheme, hidden: int, intermediate: int) -> KernelVerdict:
    """vLLM's fused-MoE decision for experts of ``scheme`` with ``hidden`` input
    and ``intermediate`` width (per tensor-parallel rank)."""
    if not scheme.quantized:
        return KernelVerdict("servable", "unquantized fused MoE")
    if scheme.type == "float" and scheme.bits == 4:
        # compressed_tensors.py: _is_nvfp4_format / _is_mxfp4 (symmetric both)
        if not scheme.symmetric:
            return _refused("FP4 weights must be symmetric (NVFP4 and MXFP4 are)")
        if scheme.strategy == "tensor_group" and scheme.group_size == 16:
            if scheme.act_bits not in (None, 4):
                return _refused("NVFP4 weights need NVFP4 or 16-bit activations")
            return KernelVerdict(
                "servable", "NVFP4 MoE (CompressedTensorsW4A4Nvfp4MoEMethod)"
            )
        if scheme.strategy == "group" and scheme.group_size == 32:
            return KernelVerdict(
                "servable", "MXFP4 MoE (CompressedTensorsW4A4Mxfp4MoEMethod)"
            )
        return _refused(
            f"FP4 with groups of {scheme.group_size} is neither NVFP4 (groups of 16) "
            "nor MXFP4 (groups of 32)"
        )
    if scheme.act_bits is not None:
        if scheme.bits == 8 and scheme.act_bits == 8 and scheme.type == scheme.act_type:
            return KernelVerdict("servable", f"{scheme.type}8 W8A8 MoE")
        return _refused(
            f"{scheme.label()} is not a fused-MoE scheme this check knows; "
            "use W4A16 (pack-quantized), NVFP4 or MXFP4"
        )
    if scheme.type != "int":
        return _refused(
            f"{scheme.label()}: weight-only float experts other than FP4 "
            "are not a fused-MoE scheme; use W4A16, NVFP4 or MXFP4"
        )
    if scheme.bits in OPTIONAL_KERNEL_BITS:
        return KernelVerdict(
            "needs optional kernel",
            "Humming WNA16 (--moe-backend humming)",
            f"int{scheme.bits} MoE runs only through the optional Humming "
            "kernel (a separate package, --moe-backend humming); released "
            "vLLM does not serve it by default: use W4A16",
        )
    if scheme.bits not in WNA16_BITS:
        return _refused(
            f"int{scheme.bits} MoE is not served by released vLLM (its WNA16 MoE "
            "takes 4 or 8 bits); use W4A16"
        )
    if scheme.format != PACK_QUANTIZED:
        return _refused(
            f"format {scheme.format!r}: vLLM's WNA16 MoE needs 'pack-quantized' "
            "(save with save_compressed=True)"
        )
    group = scheme.group_size or -1
    for dim, size in (("hidden", hidden), ("intermediate", intermediate)):
        if group != -1 and size % group:
            return _refused(
                f"group {group} does not divide {dim} {size}; use a group "
                f"that divides {size} (e.g. {_divisor_hint(size)})"
            )
    shape_ok = hidden % 128 == 0 and intermediate % max(64, group) == 0
    if group in MARLIN_GROUPS and shape_ok:
        return KernelVerdict("servable", f"Marlin WNA16 MoE (int{scheme.bits})")
    why = (
        f"group {group} is not one of Marlin's {MARLIN_GROUPS}"
        if group not in MARLIN_GROUPS
        else f"Marlin needs hidden % 128 == 0 and intermediate % {max(64, group)} == 0 "
        f"(hidden {hidden}, intermediate {intermediate})"
    )
    if scheme.actorder in ("group", "dynamic"):
        return _refused(
            f"{why}, and WNA16 MoE outside Marlin refuses actorder={scheme.actorder}"
        )
    if group == -1 or not scheme.symmetric:
        return _refused(f"{why}; the Triton WNA16 fallback takes only symmetric groups")
    return KernelVerdict(
        "servable", f"Triton WNA16 MoE (int{scheme.bits}; slower: {why})"
    )


def _divisor_hint(size: int) -> str:
    """A group that fits ``size``: Marlin's if one does, else the Triton one's."""
    marlin = [g for g in (128, 64, 32) if size % max(64, g) == 0]
    if marlin:
        return f"group {marlin[0]}"
    triton = [g for g in (128, 64, 32, 16) if size % g == 0]
    if triton:
        return f"group {triton[0]}, served by the slower Triton WNA16 kernel"
    return "fewer tensor-parallel ranks"


@dataclass
class LayerReport:
    """One MoE layer: schemes of its experts (with projection counts), attention and
    router, the shapes the rules used (``intermediate``: per tensor-parallel rank),
    and vLLM's verdict."""

    layer: int
    experts: dict[str, int]
    attention: list[str]
    router: str
    hidden: int
    intermediate: int
    status: str
    kernel: str | None
    problems: list[str] = field(default_factory=list)

    @property
    def servable(self) -> bool:
        return self.status == "servable"


def _worst(statuses: list[str]) -> str:
    for status in ("not servable", "needs optional kernel"):
        if status in statuses:
            return status
    return "servable"


def check_moe_layer(
    layer: int,
    expert_schemes: list[Scheme],
    hidden: int,
    intermediate: int,
    *,
    router: Scheme = UNQUANTIZED,
    attention: dict[str, Scheme] | None = None,
) -> LayerReport:
    """vLLM's rules for one MoE layer: one scheme for all its expert projections,
    that scheme's kernel (:func:`moe_kernel`), a full-precision router, and one
    scheme for q/k/v (vLLM fuses them into one qkv_proj)."""
    counts = Counter(expert_schemes)
    attention = attention or {}
    problems: list[str] = []
    statuses: list[str] = []
    kernel = None
    if len(counts) > 1:
        listed = ", ".join(f"{s.label()} on {n}" for s, n in counts.most_common())
        problems.append(
            f"experts of layer {layer} have {_count(len(counts))} schemes "
            f"({listed} projections); vLLM loads all experts of a layer into "
            "one tensor of one scheme: give them one scheme"
        )
        statuses.append("not servable")
    else:
        verdict = moe_kernel(next(iter(counts)), hidden, intermediate)
        kernel = verdict.kernel
        statuses.append(verdict.status)
        if verdict.reason and not verdict.servable:
            problems.append(f"layer {layer}: {verdict.reason}")
    if router.quantized:
        problems.append(
            f"the router of layer {layer} is quantized ({router.label()}); keep "
            "routers in full precision (ignore 're:.*mlp.gate$')"
        )
        statuses.append("not servable")
    qkv = {
        attention[name]
        for name in attention
        if name.rsplit(".", 1)[-1] in _ATTENTION_QKV
    }
    if len(qkv) > 1:
        problems.append(
            f"q/k/v projections of layer {layer} have {_count(len(qkv))} schemes; "
            "vLLM fuses them into one qkv_proj: give them one scheme"
        )
        statuses.append("not servable")
    return LayerReport(
        layer=layer,
        experts={s.label(): n for s, n in counts.most_common()},
        attention=sorted({s.label() for s in attention.values()}),
        router=router.label(),
        hidden=hidden,
        intermediate=intermediate,
        status=_worst(statuses),
        kernel=kernel,
        problems=problems,
    )


def _count(n: int) -> str:
    return {2: "two", 3: "three", 4: "four"}.get(n, str(n))


@dataclass
class ServingReport:
    """All MoE layers of one checkpoint and the overall verdict."""

    path: str
    model_type: str
    quant_method: str
    layers: list[LayerReport]
    tensor_parallel_size: int = 1
    problems: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return _worst(
            [lr.status for lr in self.layers] + ["not servable"] * bool(self.problems)
        )

    @property
    def servable(self) -> bool:
        return self.status == "servable"

    def all_problems(self) -> list[str]:
        return self.problems + [p for lr in self.layers for p in lr.problems]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(status=self.status, servable=self.servable)
        for row, lr in zip(out["layers"], self.layers):
            row.update(status=lr.status)
        return out
