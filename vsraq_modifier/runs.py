"""One quantization run of the shipped model: the methods and schemes that
``vsraq demo`` and ``benchmarks/run.py`` compare, and the AutoRound call behind each.

Every method goes through AutoRound's SignRound with the same seed, iterations and
calibration samples; only the loss differs (docs/objective.md "Baselines"):

- ``rtn``: round-to-nearest (``iters=0``, AutoRound's optimised RTN switched off);
- ``mse``: AutoRound's own loss, plain ``AutoRound`` (no plugin code in the loop);
- ``topk_mse``, ``router_kl``: the routing baselines;
- ``vsraq`` and its ablations (value-only, structure-only, no look-ahead).

A checkpoint is staged (:func:`vsraq_modifier.output.staged_output`): written into
a hidden directory next to its destination and renamed into place only once
AutoRound has finished, so an interrupted run never leaves a directory that looks
like a complete checkpoint.

Schemes: the ones vLLM's fused-MoE kernels serve come first (``served``: int4
groups of 64 in compressed-tensors ``pack-quantized`` for Marlin; MXFP4); the
others are research rows (docs/serving.md, ``vsraq check-serving``).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from loguru import logger

from vsraq_modifier.output import staged_output

__all__ = [
    "METHODS",
    "SCHEMES",
    "Method",
    "QuantizeResult",
    "Scheme",
    "export_format",
    "quantize_checkpoint",
]


@dataclass(frozen=True)
class Method:
    """A loss to tune with: ``options`` are VSRAQ options (None: plain AutoRound)."""

    label: str
    description: str
    options: Mapping[str, Any] | None = None
    rtn: bool = False


#: the routing methods without the router re-fit (the benchmark's cells before it
#: existed); ``*_refit`` methods add it (VSRAQConfig.router_refit)
_NO_REFIT = {"router_refit": "none"}
#: the look-ahead on every step, as every routing cell of the matrix ran before
#: ``lookahead_every`` became 2 (``--option lookahead_every=2`` gives the default)
_EVERY_STEP = {"lookahead_every": 1}

METHODS: dict[str, Method] = {
    m.label: m
    for m in [
        Method(
            "rtn", "round-to-nearest (AutoRound iters=0, no optimised RTN)", rtn=True
        ),
        Method("mse", "AutoRound's own loss (block-output MSE)"),
        Method(
            "topk_mse",
            "mse + MSE of the reference top-k logits",
            {"loss": "topk_mse", **_NO_REFIT, **_EVERY_STEP},
        ),
        Method(
            "router_kl",
            "mse + KL of the router distributions",
            {"loss": "router_kl", **_NO_REFIT, **_EVERY_STEP},
        ),
        Method(
            "vsraq",
            "mse + value + structure alignment, router re-fit off",
            {"loss": "vsraq", **_NO_REFIT, **_EVERY_STEP},
        ),
        Method(
            "vsraq_unguarded",
            "vsraq without the safeguards (kept iteration chosen on host + routing "
            "loss, no step cap): the method before them",
            {
                "loss": "vsraq",
                "best_iteration": "total",
                "max_flip_share": 1.0,
                **_NO_REFIT,
                **_EVERY_STEP,
            },
        ),
        Method(
            "vsraq_value",
            "vsraq, value term only (structure_weight=0)",
            {"loss": "vsraq", "structure_weight": 0.0, **_NO_REFIT, **_EVERY_STEP},
        ),
        Method(
            "vsraq_structure",
            "vsraq, structure term only (value_weight=0)",
            {"loss": "vsraq", "value_weight": 0.0, **_NO_REFIT, **_EVERY_STEP},
        ),
        Method(
            "vsraq_nolookahead",
            "vsraq without the look-ahead router (lookahead=false)",
            {"loss": "vsraq", "lookahead": False, **_NO_REFIT},
        ),
        Method(
            "mse_refit",
            "AutoRound's own loss + in-loop router re-fit",
            {"loss": "mse", "router_refit": "ridge"},
        ),
        Method(
            "router_kl_refit",
            "router_kl + in-loop router re-fit",
            {"loss": "router_kl", "router_refit": "ridge", **_EVERY_STEP},
        ),
        Method(
            "vsraq_refit",
            "vsraq + in-loop router re-fit, look-ahead on every step (--loss vsraq's "
            "default is this with lookahead_every=2)",
            {"loss": "vsraq", "router_refit": "ridge", **_EVERY_STEP},
        ),
        Method(
            "vsraq_default",
            "what --loss vsraq does: every other option at its default (router "
            "re-fit on, look-ahead on every 2nd step)",
            {"loss": "vsraq"},
        ),
    ]
}


@dataclass(frozen=True)
class Scheme:
    """An AutoRound scheme and the export format its checkpoints are written in
    (one that ``vsraq report`` reloads completely on a CPU)."""

    name: str
    description: str
    autoround: str
    group_size: int
    export: str
    #: what vLLM does with an MoE checkpoint of this scheme (vsraq check-serving)
    serving: str = "served"
    #: the group size given to AutoRound (None: the preset's own)
    group_override: int | None = None

    @property
    def served(self) -> bool:
        return self.serving == "served"


SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in [
        # served by vLLM (the demo's default first): groups of 64 tile the shipped
        # model's 64-wide experts, and Marlin takes group 64 when hidden % 128 == 0
        Scheme(
            "W4A16G64",
            "int4 weights, symmetric, group 64 (vLLM Marlin MoE)",
            "W4A16",
            64,
            "llm_compressor",
            group_override=64,
        ),
        Scheme(
            "MXFP4",
            "mxfp4 weights, group 32 (vLLM's MXFP4 MoE method)",
            "MXFP4",
            32,
            "llm_compressor",
        ),
        # research rows
        Scheme(
            "W4A16",
            "int4 weights, symmetric, group 128",
            "W4A16",
            128,
            "llm_compressor",
            serving="not served: group 128 is wider than the 64-wide experts",
        ),
        Scheme(
            "W3A16",
            "int3 weights, symmetric, group 128",
            "W3A16",
            128,
            "llm_compressor",
            serving="not served: int3 MoE is not in released vLLM",
        ),
        Scheme(
            "W2A16G64",
            "int2 weights, symmetric, group 64",
            "W2A16G64",
            64,
            "llm_compressor",
            serving="needs vLLM's optional int2 MoE kernel",
        ),
        # compressed-tensors NVFP4 MoE checkpoints reload without the experts' global
        # scales in transformers 5.17 (benchmarks/README.md): AutoRound's own format
        Scheme(
            "NVFP4",
            "fp4 weights and activations, group 16",
            "NVFP4",
            16,
            "auto_round",
            serving="not checked: vLLM's rules for the auto_round format were not "
            "read here",
        ),
    ]
}

#: export used when the scheme's groups do not tile every weight (see export_format)
FALLBACK_EXPORT = "fake"


def _in_features(model: torch.nn.Module) -> dict[str, int]:
    """Input width of every weight AutoRound quantizes in the decoder layers:
    Linear layers and fused 3-D expert weights ([experts, out, in])."""
    from vsraq_modifier.routers.base import decoder_layers

    widths: dict[str, int] = {}
    for i, layer in enumerate(decoder_layers(model)):
        for name, module in layer.named_modules():
            if isinstance(module, torch.nn.Linear):
                widths[f"{i}.{name}"] = module.in_features
        for name, param in layer.named_parameters():
            if param.ndim == 3:
                widths[f"{i}.{name}"] = int(param.shape[-1])
    return widths


def export_format(model: torch.nn.Module, scheme: Scheme) -> tuple[str, str | None]:
    """(format, reason for a fallback or None).

    AutoRound quantizes a weight narrower than the group size as one padded group
    per row, but neither compressed export then reloads in transformers 5.17:
    compressed-tensors cannot pack it (and transformers decompresses all experts with
    one scheme), auto_round has no CPU kernel for it. AutoRound's ``fake`` format
    (dequantized weights, a plain checkpoint) keeps exactly the tuned values.
    """
    ragged = sorted(
        {
            n.split(".", 1)[1]
            for n, w in _in_features(model).items()
            if w % scheme.group_size
        }
    )
    if scheme.export != "llm_compressor" or not ragged:
        return scheme.export, None
    return FALLBACK_EXPORT, (
        f"{scheme.name}: group size {scheme.group_size} does not divide "
        f"the input width of {', '.join(ragged)}; writing AutoRound's "
        f"'{FALLBACK_EXPORT}' format (dequantized weights) instead of "
        "compressed-tensors"
    )


@dataclass
class QuantizeResult:
    """Where the checkpoint went and what producing it cost."""

    path: Path
    seconds: float
    method: str
    scheme: str
    settings: dict[str, Any] = field(default_factory=dict)
    #: the VSRAQ quantizer's per-block log (``BlockReport``), empty for rtn / mse
    blocks: list[dict[str, Any]] = field(default_factory=list)


def _checkpoint_dir(root: Path) -> Path:
    """The directory AutoRound wrote config.json into (it adds a sub-folder)."""
    found = sorted(p.parent for p in root.rglob("config.json"))
    if len(found) != 1:
        raise RuntimeError(f"expected one checkpoint under {root}, found {found}")
    return found[0]


def _compressor(
    model: torch.nn.Module,
    tokenizer: Any,
    method: Method,
    scheme: Scheme,
    args: dict[str, Any],
    options: Mapping[str, Any] | None,
) -> Any:
    if method.options is None:
        from auto_round import AutoRound

        extra = {"iters": 0, "disable_opt_rtn": True} if method.rtn else {}
        return AutoRound(model, tokenizer, scheme=scheme.autoround, **{**args, **extra})
    from vsraq_modifier.integrations.autoround import autoround

    return autoround(
        model,
        tokenizer,
        staged=False,  # quantize_checkpoint stages the whole output itself
        scheme=scheme.autoround,
        **{**method.options, **(options or {})},
        **args,
    )


def quantize_checkpoint(
    model_dir: str | Path,
    out: str | Path,
    *,
    method: str,
    scheme: str,
    dataset: list[torch.Tensor],
    seed: int,
    iters: int,
    batch_size: int = 8,
    options: Mapping[str, Any] | None = None,
) -> QuantizeResult:
    """Quantize the checkpoint in ``model_dir`` with ``method`` at ``scheme`` and
    write it to ``out`` (which must not exist).

    ``dataset``: calibration samples [1, seqlen] (:mod:`vsraq_modifier.calibration`);
    ``options``: VSRAQ options added to a routing method's own (ignored by rtn and
    mse). ``seconds`` covers AutoRound from construction to the saved files.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m, s = METHODS[method], SCHEMES[scheme]
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; remove it or choose another output")
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    seqlen = int(dataset[0].shape[-1])
    args = dict(
        dataset=dataset,
        nsamples=len(dataset),
        seqlen=seqlen,
        batch_size=min(batch_size, len(dataset)),
        seed=seed,
        iters=iters,
        device_map="cpu",
        enable_torch_compile=False,
    )
    if s.group_override is not None:
        args["group_size"] = s.group_override
    fmt, why = export_format(model, s)
    if why:
        logger.warning(why)
    with staged_output(out) as stage:
        start = time.perf_counter()
        ar = _compressor(model, tokenizer, m, s, args, options)
        ar.quantize_and_save(str(stage / "export"), format=fmt)
        seconds = time.perf_counter() - start
        for path in _checkpoint_dir(stage / "export").iterdir():
            path.rename(stage / path.name)  # the checkpoint at the top of out
        shutil.rmtree(stage / "export")
    quantizer = getattr(getattr(ar, "alg_composer", None), "block_quantizer", None)
    blocks = [asdict(r) for r in getattr(quantizer, "reports", [])]
    settings = {k: v for k, v in args.items() if k != "dataset"}
    settings["format"] = fmt
    if m.rtn:
        settings["iters"] = 0
    if m.options is not None:
        settings["vsraq"] = {**m.options, **(options or {})}
    return QuantizeResult(out, seconds, method, scheme, settings, blocks)
