"""Memory the routing objective adds to a tuning run, estimated before it starts.

Two things in VSRAQ grow with the calibration set and the model, and nothing else:

1. Reference router logits. While a block is tuned, the full-precision logits of its
   own router(s) and of the look-ahead router are kept for every calibration token,
   2 bytes per value (``session/taps.py``, ``ReferenceStore``):
   tokens x experts x 2 bytes x routers kept. One block's are alive at a time, so
   the peak is the largest block's (a block with a router and a look-ahead router
   keeps two).
2. Look-ahead activations. Each tuning step runs the full-precision layers up to the
   next router on the quantized block's output with autograd on; what autograd
   keeps for the backward pass grows with the step's tokens (batch_size x seqlen)
   and the layers' widths. Per token and look-ahead layer, in values of the
   activation dtype: 6 hidden + 5 query + 5 key/value widths (norms, projections,
   rotary embedding, attention) + the router's experts, + 4 x the MLP width for a
   layer that is run whole on the way (fitted on the tiny families'
   ``saved_tensors_hooks`` measurements, tests/reliability/test_memory.py). With
   ``lookahead_attention: reference`` a frozen attention keeps only the norms
   before and after it (5 hidden widths), and its reference output joins the
   cache of item 1: tokens x hidden x 2 bytes per frozen layer.

Not counted: the host's own caches (AutoRound keeps every sample's block inputs and
outputs), and the weights of the look-ahead layers, which are loaded one decoder
layer early. The limit (:func:`memory_limit_bytes`) is ``VSRAQ_MEMORY_LIMIT_GB``, or
else the memory free on the device when the run starts. Pure: torch and the stdlib.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from loguru import logger

__all__ = [
    "ENV_LIMIT",
    "MemoryLimitError",
    "RoutingMemory",
    "available_bytes",
    "check_memory",
    "estimate_routing_memory",
    "guard_routing_memory",
    "memory_limit_bytes",
]

#: environment variable with the limit in GB (2**30 bytes); 0 / off: no check
ENV_LIMIT = "VSRAQ_MEMORY_LIMIT_GB"
GIB = 2**30
#: bytes per cached reference logit (``taps.compact``: float16 / bfloat16)
REFERENCE_LOGIT_BYTES = 2


class MemoryLimitError(MemoryError):
    """The routing objective's caches would exceed the memory limit."""


class _Site(Protocol):  # a RouterSite, as far as this module needs one
    layer: int
    spec: Any


@dataclass(frozen=True)
class RoutingMemory:
    """Estimated peak bytes the routing objective adds, with what they come from.

    ``reference_*``: the block whose cached reference logits are largest
    (decoder layer ``reference_layer``, ``reference_routers`` routers with
    ``reference_experts`` experts between them); ``lookahead_*``: the block whose
    look-ahead path keeps the most activations (``lookahead_layers`` layers).
    """

    tokens: int
    batch_tokens: int
    reference_bytes: int
    reference_layer: int | None
    reference_routers: int
    reference_experts: int
    lookahead_bytes: int
    lookahead_layers: int
    #: per token, the values of frozen attention outputs kept with the logits
    reference_hidden: int = 0

    @property
    def total_bytes(self) -> int:
        return self.reference_bytes + self.lookahead_bytes

    def describe(self) -> str:
        """One log line: the total and how it is made up."""
        per_token = (
            f"{self.reference_experts} experts over {self.reference_routers} "
            "router(s) kept"
        )
        if self.reference_hidden:
            per_token = (
                f"({per_token} + {self.reference_hidden} values of frozen "
                "look-ahead attention)"
            )
        ref = (
            f"reference router logits {_gib(self.reference_bytes)} "
            f"({self.tokens} tokens x {per_token} x {REFERENCE_LOGIT_BYTES} bytes, "
            f"block {self.reference_layer})"
        )
        ahead = (
            f"look-ahead activations {_gib(self.lookahead_bytes)} "
            f"({self.batch_tokens} tokens per step through {self.lookahead_layers} "
            "layer(s))"
            if self.lookahead_bytes
            else "no look-ahead activations"
        )
        return f"about {_gib(self.total_bytes)}: {ref}; {ahead}"


def _gib(n: int) -> str:
    """Bytes in GB (2**30), or MB / KB when smaller."""
    for unit, size in (("GB", GIB), ("MB", 2**20), ("KB", 2**10)):
        if n >= size / 10 or unit == "KB":
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"  # pragma: no cover


def _width(config: Any, *names: str, default: int = 0) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return default


def _per_token_values(
    config: Any, experts: int, whole_layers: int, frozen: int = 0
) -> int:
    """Activation values autograd keeps per token for one look-ahead path, of
    whose ``whole_layers + 1`` attentions ``frozen`` are frozen."""
    hidden = _width(config, "hidden_size", default=1)
    heads = _width(config, "num_attention_heads", default=1)
    head_dim = _width(config, "head_dim", default=max(hidden // heads, 1))
    kv_heads = _width(config, "num_key_value_heads", default=heads)
    mlp = _width(config, "intermediate_size", default=4 * hidden)
    attention = 6 * hidden + 5 * heads * head_dim + 5 * kv_heads * head_dim
    running = whole_layers + 1 - frozen
    return running * attention + frozen * 5 * hidden + whole_layers * 4 * mlp + experts


def estimate_routing_memory(
    sites: Sequence[_Site],
    *,
    num_layers: int,
    config: Any,
    tokens: int,
    batch_tokens: int,
    lookahead: bool,
    routing_loss: bool = True,
    activation_bytes: int = 4,
    frozen_attention: Collection[int] | None = None,
) -> RoutingMemory:
    """Peak bytes the routing objective adds when tuning a model block by block.

    ``sites``: the model's MoE routers (``find_routers``); ``num_layers``: decoder
    layers; ``config``: the (text) model config; ``tokens``: calibration tokens
    (samples x sequence length, padding included: the cache keeps every position);
    ``batch_tokens``: tokens per tuning step; ``lookahead``: the option of the same
    name; ``routing_loss``: False for loss=mse, which caches the reference logits
    (for the agreement log line) but runs no look-ahead with autograd;
    ``frozen_attention``: with ``lookahead_attention: reference``, the decoder
    layers whose attention a look-ahead freezes (their reference outputs are
    cached, their activations not kept).
    """
    hidden = _width(config, "hidden_size", default=1)
    frozen_at = set(frozen_attention or ()) if routing_loss and lookahead else set()
    ref_best = (0, None, 0, 0, 0)  # bytes, layer, routers, experts, hidden values
    ahead_best = (0, 0)  # bytes, layers
    ordered = sorted(sites, key=lambda s: s.layer)
    for index in range(num_layers):
        own = [s for s in ordered if s.layer == index]
        later = [s for s in ordered if s.layer > index] if lookahead else []
        kept = own + later[:1]
        if not kept:
            continue
        experts = sum(int(s.spec.num_experts) for s in kept)
        frozen = (
            sum(1 for j in range(index + 1, later[0].layer + 1) if j in frozen_at)
            if later
            else 0
        )
        ref = tokens * (experts + frozen * hidden) * REFERENCE_LOGIT_BYTES
        if ref > ref_best[0]:
            ref_best = (ref, index, len(kept), experts, frozen * hidden)
        if later and routing_loss:
            nxt = later[0]
            path = nxt.layer - index  # layers after the block up to the router's
            values = _per_token_values(
                config, int(nxt.spec.num_experts), path - 1, frozen
            )
            ahead = batch_tokens * values * activation_bytes
            if ahead > ahead_best[0]:
                ahead_best = (ahead, path)
    return RoutingMemory(
        tokens=tokens,
        batch_tokens=batch_tokens,
        reference_bytes=ref_best[0],
        reference_layer=ref_best[1],
        reference_routers=ref_best[2],
        reference_experts=ref_best[3],
        reference_hidden=ref_best[4],
        lookahead_bytes=ahead_best[0],
        lookahead_layers=ahead_best[1],
    )


def available_bytes(device: Any = "cpu") -> int | None:
    """Memory free on ``device`` now (CPU: MemAvailable; CUDA: free memory), or
    None where it cannot be read."""
    kind = str(device).split(":")[0]
    if kind == "cuda":
        try:
            import torch

            return int(torch.cuda.mem_get_info(device)[0])
        except Exception:  # noqa: BLE001 - no CUDA, no driver: unknown
            return None
    if kind != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_limit_bytes(
    device: Any = "cpu", environ: Mapping[str, str] | None = None
) -> int | None:
    """The limit: ``VSRAQ_MEMORY_LIMIT_GB`` (GB = 2**30 bytes; 0, off or none: no
    limit), else the memory free on ``device`` (None: unknown, no check)."""
    env = os.environ if environ is None else environ
    raw = env.get(ENV_LIMIT, "").strip()
    if not raw:
        return available_bytes(device)
    if raw.lower() in ("0", "off", "none"):
        return None
    try:
        gb = float(raw)
    except ValueError:
        gb = float("nan")
    if not gb >= 0 or gb == float("inf"):
        from vsraq_modifier.inputs import SettingError  # a ValueError, one line

        raise SettingError(
            f"{ENV_LIMIT}={raw!r}: expected a number of GB (e.g. 40), or 0 / off "
            "to switch the memory check off"
        )
    return int(gb * GIB)


def check_memory(estimate: RoutingMemory, limit_bytes: int | None) -> None:
    """Raise :class:`MemoryLimitError` when ``estimate`` exceeds ``limit_bytes``,
    naming the estimate and the options that lower it."""
    if limit_bytes is None or estimate.total_bytes <= limit_bytes:
        return
    fixes = []
    if estimate.reference_bytes:
        fixes.append(
            "fewer calibration tokens (nsamples / seqlen) for the reference logits"
        )
    if estimate.lookahead_bytes:
        fixes.append(
            "a smaller batch_size, or lookahead=False (--vsraq_no_lookahead), for "
            "the look-ahead activations"
        )
    if estimate.lookahead_bytes > estimate.reference_bytes:
        fixes.reverse()
    raise MemoryLimitError(
        f"vsraq: the routing objective needs {estimate.describe()}, over the limit "
        f"of {_gib(limit_bytes)}. Lower it with " + "; or ".join(fixes) + ". "
        f"Or set {ENV_LIMIT} (GB; 0 switches the check off) if the memory is there."
    )


def guard_routing_memory(
    sites: Sequence[_Site],
    *,
    device: Any = "cpu",
    environ: Mapping[str, str] | None = None,
    **estimate_kwargs: Any,
) -> RoutingMemory:
    """Estimate (:func:`estimate_routing_memory`), log and check against
    :func:`memory_limit_bytes` in one call; returns the estimate."""
    estimate = estimate_routing_memory(sites, **estimate_kwargs)
    limit = memory_limit_bytes(device, environ)
    shown = "no limit" if limit is None else f"limit {_gib(limit)}"
    logger.info(f"vsraq: routing memory {estimate.describe()} ({shown})")
    check_memory(estimate, limit)
    return estimate
