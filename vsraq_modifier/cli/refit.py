"""``vsraq refit``: re-fit the full-precision routers of a quantized MoE checkpoint.

Router by router in model order, router l is re-fitted (:mod:`vsraq_modifier.refit`)
on its inputs in the quantized model, with routers < l already re-fitted, against
the reference's router logits on the same tokens; a fit that does not raise the
routing agreement on held-aside tokens is not kept. The output is the input
checkpoint with only the router tensors' bytes replaced (same files, config,
tensor order, metadata; every other byte identical), written through a staging
directory so it is complete or absent. docs/refit.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vsraq_modifier.refit import DEFAULT_RIDGE, RefitOptions, RefitResult, refit_router

__all__ = ["RefitInputError", "add_parser", "read_dataset", "refit_routers", "run"]

DEFAULT_NSAMPLES = 128
DEFAULT_SEQLEN = 256
#: config fields that must agree between the reference and the checkpoint
_SAME = ("model_type", "num_hidden_layers", "hidden_size", "num_experts",
         "num_local_experts", "n_routed_experts", "num_experts_per_tok")
_QUANT_SUFFIXES = ("weight_packed", "weight_scale", "weight_zero_point", "weight_shape",
                   "weight_global_scale", "qweight", "scales")
_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "F64": torch.float64}


class RefitInputError(ValueError):
    """An input that cannot be re-fitted (named in the message)."""


class _Stop(Exception):
    """Ends a forward pass once the router of interest has been reached."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "refit", help="re-fit the routers of a quantized MoE checkpoint to its inputs",
        description="Re-fit each full-precision router of a quantized MoE checkpoint\n"
        "(compressed-tensors from llm-compressor, or AutoRound's llm_compressor\n"
        "export) to the inputs it sees in the quantized model, against the\n"
        "reference's router logits. Writes OUT_DIR: the input checkpoint with only\n"
        "the router tensors changed. docs/refit.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--reference", metavar="FP_DIR", required=True,
      help="the full-precision checkpoint the quantized one was made from")
    a("--quantized", metavar="Q_DIR", required=True,
      help="the quantized checkpoint directory (config.json and shards)")
    a("--dataset", metavar="FILE", required=True,
      help="calibration text: plain UTF-8, or .json/.jsonl records with a 'text' "
      "field (as AutoRound's --dataset takes)")
    a("--nsamples", type=int, default=DEFAULT_NSAMPLES,
      help=f"calibration windows (default {DEFAULT_NSAMPLES})")
    a("--seqlen", type=int, default=DEFAULT_SEQLEN,
      help=f"tokens per window (default {DEFAULT_SEQLEN})")
    a("--ridge", type=float, default=DEFAULT_RIDGE,
      help=f"relative ridge strength, > 0 (default {DEFAULT_RIDGE:g})")
    a("--holdout", type=float, default=RefitOptions().holdout,
      help="share of the tokens held aside to check each fit; a fit is kept only "
      "if it raises routing agreement there (default 0.25)")
    a("--target", choices=("auto", "logits", "centred", "sigmoid"), default="auto",
      help="fit target (default auto: centred logits for softmax routers, sigmoid "
      "space for sigmoid routers)")
    a("--weights", choices=("uniform", "boundary"), default="uniform",
      help="token/expert weights (default uniform)")
    a("--seed", type=int, default=0, help="picks the windows and held-aside tokens")
    a("--batch-size", type=int, default=8, help="windows per forward pass (default 8)")
    a("--device", default="cpu", help="torch device (default cpu)")
    a("--no-progress", action="store_true", help="no progress bar on stderr")
    a("--out", metavar="OUT_DIR", required=True,
      help="output checkpoint directory (must not exist or be empty)")
    p.set_defaults(func=run)
    return p


def _text_config(cfg: dict[str, Any]) -> dict[str, Any]:
    return cfg.get("text_config") or cfg


def _config(path: Path, what: str) -> dict[str, Any]:
    f = path / "config.json"
    if not f.is_file():
        raise RefitInputError(f"{what} {path}: no config.json; pass a checkpoint "
                              "directory")
    return json.loads(f.read_text())


def check_same_model(ref: dict[str, Any], q: dict[str, Any]) -> None:
    """Refuse a checkpoint whose architecture differs from the reference's."""
    r, c = _text_config(ref), _text_config(q)
    diff = [f"{k} {r.get(k)} vs {c.get(k)}" for k in _SAME if r.get(k) != c.get(k)]
    if diff:
        raise RefitInputError("the reference and the quantized checkpoint are not the "
                              f"same model ({', '.join(diff)}); pass the reference "
                              "the checkpoint was quantized from")


def read_dataset(path: Path) -> str:
    """The calibration text of FILE (plain text, or JSON/JSONL records' 'text')."""
    if not path.is_file():
        raise RefitInputError(f"--dataset {path}: not a file")
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise RefitInputError(f"--dataset {path}: not UTF-8 text (byte {e.start}); "
                              "convert it to UTF-8") from None
    if path.suffix.lower() not in (".json", ".jsonl"):
        texts = [raw]
    else:
        try:
            if path.suffix.lower() == ".jsonl":
                records = [json.loads(ln) for ln in raw.splitlines() if ln.strip()]
            else:
                loaded = json.loads(raw)
                records = loaded if isinstance(loaded, list) else [loaded]
        except json.JSONDecodeError as e:
            raise RefitInputError(f"--dataset {path}: invalid JSON at line {e.lineno}: "
                                  f"{e.msg}") from None
        texts = []
        for i, rec in enumerate(records):
            if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                raise RefitInputError(f"--dataset {path}: record {i} has no 'text' "
                                      "string; each record needs {\"text\": \"...\"}")
            texts.append(rec["text"])
    text = "\n\n".join(texts)
    if not text.strip():
        raise RefitInputError(f"--dataset {path}: no text")
    return text


def _calibration(args: argparse.Namespace, reference: Path, ref_cfg: dict) -> list:
    from transformers import AutoTokenizer

    from vsraq_modifier.calibration import calibration_samples

    text = read_dataset(Path(args.dataset))
    limit = _text_config(ref_cfg).get("max_position_embeddings")
    if isinstance(limit, int) and args.seqlen > limit:
        raise RefitInputError(f"--seqlen {args.seqlen} exceeds the model's "
                              f"max_position_embeddings ({limit})")
    for folder in (reference, Path(args.quantized)):
        try:
            tok = AutoTokenizer.from_pretrained(str(folder))
            break
        except (OSError, ValueError):
            continue
    else:
        raise RefitInputError(f"no tokenizer in {reference} or {args.quantized}")
    ids = torch.tensor(tok(text, add_special_tokens=False, verbose=False)["input_ids"])
    try:
        return calibration_samples(ids, nsamples=args.nsamples, seqlen=args.seqlen,
                                   seed=args.seed)
    except ValueError as e:
        raise RefitInputError(f"calibration text too short: {e}") from None


def _shards(folder: Path) -> dict[str, tuple[Path, int, dict[str, Any]]]:
    """tensor name -> (shard file, data start, header entry) of every shard."""
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        with f.open("rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            header = json.loads(fh.read(n))
        for name, entry in header.items():
            if name != "__metadata__":
                out[name] = (f, 8 + n, entry)
    if not out:
        raise RefitInputError(f"--quantized {folder}: no .safetensors shards")
    return out


def _module_names(model: nn.Module) -> dict[int, str]:
    return {id(m): n for n, m in model.named_modules()}


def router_keys(model: nn.Module, sites: Sequence[Any], tensors: dict[str, Any],
                folder: Path) -> dict[int, dict[str, str]]:
    """layer -> {'weight'|'bias'|'e_score_correction_bias': checkpoint tensor name};
    refuses quantized or missing router tensors."""
    names = _module_names(model)
    out: dict[int, dict[str, str]] = {}
    for s in sites:
        prefix = names[id(s.router)]
        quant = [f"{prefix}.{q}" for q in _QUANT_SUFFIXES if f"{prefix}.{q}" in tensors]
        if quant:
            tail = prefix.split(".", 3)[-1] if prefix.count(".") >= 3 else prefix
            raise RefitInputError(
                f"--quantized {folder}: the router {prefix} is quantized ({quant[0]}); "
                "re-fitting needs full-precision routers. Quantize again with the "
                f"router ignored: add \"re:.*{tail}$\" to the recipe's ignore list")
        keys = {}
        for attr in ("weight", "bias", "e_score_correction_bias"):
            if isinstance(getattr(s.router, attr, None), torch.Tensor):
                keys[attr] = f"{prefix}.{attr}"
        if keys.get("weight") not in tensors:
            raise RefitInputError(f"--quantized {folder}: no router tensor "
                                  f"{prefix}.weight in the shards; the checkpoint has "
                                  "no routers under the model's own names")
        out[s.layer] = {k: v for k, v in keys.items() if v in tensors}
    return out


def _batches(samples: list[torch.Tensor], size: int, device: str) -> list[torch.Tensor]:
    return [torch.cat(samples[i : i + size]).to(device)
            for i in range(0, len(samples), size)]


def _reference_logits(model: nn.Module, sites: Sequence[Any],
                      batches: list[torch.Tensor]) -> dict[int, torch.Tensor]:
    got: dict[int, list[torch.Tensor]] = {s.layer: [] for s in sites}

    def hook(site: Any) -> Callable:
        def f(_m: nn.Module, _a: Any, out: Any) -> None:
            got[site.layer].append(site.logits(out).detach().float().cpu())
        return f

    handles = [s.router.register_forward_hook(hook(s)) for s in sites]
    try:
        with torch.no_grad():
            for ids in batches:
                model(input_ids=ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return {k: torch.cat(v) for k, v in got.items()}


def router_inputs(model: nn.Module, site: Any, batches: list[torch.Tensor]
                  ) -> torch.Tensor:
    """[N, H] inputs of one router over all batches (forward stops at the router)."""
    got: list[torch.Tensor] = []

    def pre(_m: nn.Module, args: Any) -> None:
        x = args[0]
        got.append(x.detach().reshape(-1, x.shape[-1]).float().cpu())
        raise _Stop

    handle = site.router.register_forward_pre_hook(pre)
    try:
        with torch.no_grad():
            for ids in batches:
                try:
                    model(input_ids=ids, use_cache=False)
                except _Stop:
                    pass
    finally:
        handle.remove()
    return torch.cat(got)


def refit_routers(reference: nn.Module, quantized: nn.Module,
                  batches: list[torch.Tensor], options: RefitOptions,
                  dtypes: dict[int, torch.dtype] | None = None, progress: bool = True,
                  ) -> list[tuple[Any, RefitResult]]:
    """Re-fit every router of ``quantized`` in model order, in place (a fit not
    kept leaves the router as it was). ``dtypes``: per layer, the dtype the router
    is stored in (the in-memory router gets the stored values)."""
    from tqdm.auto import tqdm

    from vsraq_modifier.routers import find_routers

    ref_sites, q_sites = find_routers(reference), find_routers(quantized)
    if [(s.layer, s.spec.num_experts) for s in ref_sites] != [
            (s.layer, s.spec.num_experts) for s in q_sites]:
        raise RefitInputError("the reference's and the checkpoint's MoE routers "
                              "differ (layers, experts); not the same model")
    ref_logits = _reference_logits(reference, ref_sites, batches)
    out = []
    for site in tqdm(q_sites, desc="re-fitting routers", disable=not progress):
        x = router_inputs(quantized, site, batches)
        r = site.router
        bias = r.bias if isinstance(getattr(r, "bias", None), torch.Tensor) else None
        res = refit_router(r.weight, bias, site.spec, x, ref_logits[site.layer],
                           options=options, dtype=(dtypes or {}).get(site.layer))
        if res.accepted:
            with torch.no_grad():
                r.weight.copy_(res.fit.weight)
                if bias is not None and res.fit.bias is not None:
                    bias.copy_(res.fit.bias)
                if site.spec.bias is not None and res.fit.correction_bias is not None:
                    site.spec.bias.copy_(res.fit.correction_bias)
        out.append((site, res))
    return out


def write_checkpoint(source: Path, stage: Path, tensors: dict[str, Any],
                     new: dict[str, torch.Tensor]) -> None:
    """Copy ``source`` into ``stage`` and overwrite the bytes of the ``new`` tensors
    in place (same dtype and shape: nothing else in any file moves)."""
    shutil.copytree(source, stage, dirs_exist_ok=True)
    for name, value in new.items():
        shard, start, entry = tensors[name]
        a, b = entry["data_offsets"]
        t = value.detach().cpu().contiguous().to(_DTYPES[entry["dtype"]])
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        if len(data) != b - a or list(t.shape) != entry["shape"]:
            raise RuntimeError(f"{name}: refitted tensor does not match its slot")
        with (stage / shard.relative_to(source)).open("r+b") as fh:
            fh.seek(start + a)
            fh.write(data)


def run(args: argparse.Namespace) -> int:
    from vsraq_modifier.metrics.loading import IncompleteCheckpointError
    from vsraq_modifier.objective.pair import NonFiniteRoutingError
    from vsraq_modifier.output import OutputDirError
    from vsraq_modifier.routers import UnsupportedModelError

    try:
        return _run(args)
    except (RefitInputError, OutputDirError, IncompleteCheckpointError,
            UnsupportedModelError, NonFiniteRoutingError, FileNotFoundError) as e:
        print(f"vsraq refit: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2


def _options(args: argparse.Namespace) -> RefitOptions:
    if args.nsamples < 1 or args.seqlen < 2 or args.batch_size < 1:
        raise RefitInputError("--nsamples and --batch-size must be >= 1, --seqlen >= 2")
    try:
        return RefitOptions(method="ridge", ridge=args.ridge, holdout=args.holdout,
                            target=args.target, weights=args.weights, seed=args.seed)
    except ValueError as e:
        raise RefitInputError(f"bad option: {e}") from None


def _run(args: argparse.Namespace) -> int:
    from vsraq_modifier.metrics.loading import load_model
    from vsraq_modifier.output import check_output_dir, staged_output
    from vsraq_modifier.routers import UnsupportedModelError, find_routers

    options = _options(args)
    ref_dir, q_dir = Path(args.reference), Path(args.quantized)
    ref_cfg, q_cfg = _config(ref_dir, "--reference"), _config(q_dir, "--quantized")
    check_same_model(ref_cfg, q_cfg)
    check_output_dir(args.out)
    tensors = _shards(q_dir)
    samples = _calibration(args, ref_dir, ref_cfg)
    reference = load_model(ref_dir, dtype="float32", device=args.device).model
    try:
        ref_sites = find_routers(reference)
    except UnsupportedModelError as e:
        raise RefitInputError(f"--reference {ref_dir}: {e}") from None
    # the checkpoint's router tensors, checked before it is loaded (a quantized or
    # missing router would fail the load with a less telling message)
    keys = router_keys(reference, ref_sites, tensors, q_dir)
    quantized = load_model(q_dir, dtype="float32", device=args.device).model
    try:
        sites = find_routers(quantized)
    except UnsupportedModelError as e:
        raise RefitInputError(f"--quantized {q_dir}: no MoE router to re-fit ({e})"
                              ) from None
    for s in sites:
        w = s.router.weight
        if not w.is_floating_point() or w.shape != (s.spec.num_experts, w.shape[1]):
            raise RefitInputError(f"router of layer {s.layer} is not a float [E, H] "
                                  "weight; add its name to the recipe's ignore list")
    dtypes = {layer: _DTYPES[tensors[k["weight"]][2]["dtype"]]
              for layer, k in keys.items()}
    batches = _batches(samples, args.batch_size, args.device)
    results = refit_routers(reference, quantized, batches, options, dtypes,
                            progress=not args.no_progress)
    new: dict[str, torch.Tensor] = {}
    for site, res in results:
        if not res.accepted:
            continue
        k = keys[site.layer]
        new[k["weight"]] = res.fit.weight
        if "bias" in k and res.fit.bias is not None:
            new[k["bias"]] = res.fit.bias
        if "e_score_correction_bias" in k and res.fit.correction_bias is not None:
            new[k["e_score_correction_bias"]] = res.fit.correction_bias
    with staged_output(args.out) as stage:
        write_checkpoint(q_dir, stage, tensors, new)
    print(format_summary(results))
    print(f"\nwrote {Path(args.out)} ({sum(r.accepted for _, r in results)} of "
          f"{len(results)} routers re-fitted)")
    return 0


def format_summary(results: list[tuple[Any, RefitResult]]) -> str:
    """One line per router: fit error and held-aside Jaccard before -> after."""
    rows = ["layer  fit error before -> after   held-aside Jaccard before -> after  "
            "kept"]
    for site, r in results:
        rows.append(f"{site.layer:>5}  {r.fit_error_before:>10.4g} -> "
                    f"{r.fit_error_after:<10.4g}  {r.agreement_before:>16.4f} -> "
                    f"{r.agreement_after:<8.4f}  {'re-fit' if r.accepted else 'original'}")
    return "\n".join(rows)
