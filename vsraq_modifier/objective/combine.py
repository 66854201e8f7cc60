"""The per-block routing loss: raw terms per router, normalised per block.

L = L_host + host0 * sum_term lambda_term * mean_pairs(term / term^(0))

``term^(0)`` is the term's value at the start of the block (per router pair),
``host0`` the host loss's value at the block's first call. The normalisation makes
``lambda = 1`` mean "as large as the host loss at the start" on every block, whatever
the router's scale; SignSGD (AutoRound) only sees the gradient's sign, so the relative
scale of the terms is all that matters. See docs/objective.md.

Under ``torch.distributed`` each rank sees its own samples, so each would compute
its own ``term^(0)`` and ``host0``; ``reduce`` (:func:`mean_over_ranks`) averages
them over the ranks, so every rank weights the terms alike
(docs/llm-compressor.md, "Several processes").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from vsraq_modifier.config import VSRAQConfig
from vsraq_modifier.objective.baselines import router_kl, topk_mse
from vsraq_modifier.objective.pair import PreparedPair, RouterPair, prepare
from vsraq_modifier.objective.sensitivity import sensitivity_margin, sensitivity_weights
from vsraq_modifier.objective.set_nll import set_nll_term
from vsraq_modifier.objective.structure import structure_term
from vsraq_modifier.objective.value import value_term

__all__ = [
    "routing_terms",
    "term_weights",
    "BlockObjective",
    "mean_over_ranks",
    "world_size",
]

#: a mean over the processes of a float64 vector, the same result on every rank
Reduce = Callable[[Tensor], Tensor]

#: the key of the host loss's start value among the normalisers
_HOST = (-1, "host")


def world_size() -> int:
    """The ``torch.distributed`` processes of this run (1 without a group)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size()


def mean_over_ranks(values: Tensor) -> Tensor:
    """``values`` averaged over the ``torch.distributed`` ranks (one all-reduce);
    ``values`` itself without a process group or with one process."""
    import torch.distributed as dist

    world = world_size()
    if world == 1:
        return values
    device = torch.device("cpu")
    if dist.get_backend() == "nccl":  # nccl reduces accelerator tensors only
        device = torch.device("cuda", torch.cuda.current_device())
    buffer = values.to(device, copy=True)
    dist.all_reduce(buffer)
    return (buffer / world).to(values.device)


def term_weights(config: VSRAQConfig) -> dict[str, float]:
    """lambda of each term of ``config.loss`` (the baselines use value_weight)."""
    if config.loss == "vsraq":
        return {"value": config.value_weight, "structure": config.structure_weight}
    if config.loss in ("topk_mse", "router_kl"):
        return {config.loss: config.value_weight}
    return {}


def _terms(
    prep: PreparedPair, config: VSRAQConfig, names: Sequence[str]
) -> dict[str, Tensor]:
    if config.loss == "topk_mse":
        return {"topk_mse": topk_mse(prep)}
    if config.loss == "router_kl":
        return {"router_kl": router_kl(prep)}
    weights = sensitivity_weights(sensitivity_margin(prep), config.temperature)
    out: dict[str, Tensor] = {}
    if "value" in names:
        out["value"] = value_term(prep, weights, config.value_target)
    if "structure" in names:
        if config.structure == "set_nll":
            out["structure"] = set_nll_term(prep, weights)
        else:
            out["structure"] = structure_term(prep, weights, config.margin)
    return out


def routing_terms(pair: RouterPair, config: VSRAQConfig) -> dict[str, Tensor]:
    """Raw scalar terms of ``config.loss`` for one router (float32, or float64 for
    float64 logits); a term whose lambda is 0 is omitted.

    A pair without any valid token contributes zero: every term is a (gradient-free)
    zero, so a batch that happens to be all padding does not stop quantization.
    """
    names = [n for n, lam in term_weights(config).items() if lam > 0]
    if not names:
        return {}
    prep = prepare(pair)
    if prep is None:
        zero = torch.zeros((), dtype=torch.float32, device=pair.logits.device)
        return {n: zero for n in names}
    return _terms(prep, config, names)


class BlockObjective:
    """The routing loss of one block, normalised by its values at the block's start.

    Call :meth:`reset` when a new block starts. ``first`` / ``last`` hold the raw term
    values (averaged over the pairs) at the first and latest call, for the log line.
    Each (pair position, term) is divided by its own first value above ``floor``
    (set lazily, so a term that starts at exactly 0 is not blown up by 1 / floor once
    it moves; until then it is divided by ``floor``).

    ``reduce``: averages the start values over the processes (:func:`mean_over_ranks`)
    so that every rank has the same normalisers. It runs at the block's first call
    on one vector (the host loss and every (pair, term) start value, each with a
    "has it" flag, in the same order on every rank), and again at a later call
    only while some normaliser is still unset on every rank; which ones are set is
    decided on the reduced values, so every rank makes the same calls. A start
    value is the mean over the ranks that have one above ``floor``.
    """

    def __init__(
        self,
        config: VSRAQConfig,
        floor: float = 1e-8,
        reduce: Reduce | None = None,
    ) -> None:
        self.config = config
        self.floor = float(floor)
        self.reduce = reduce
        self.lambdas = {n: lam for n, lam in term_weights(config).items() if lam > 0}
        self.reset()

    def reset(self) -> None:
        """Start a new block: forget the normalisers, host scale and logs."""
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.calls = 0
        self._scale: dict[tuple[int, str], float] = {}
        self._host0: float | None = None

    @property
    def normalisers(self) -> dict[tuple[int, str], float]:
        """The block's start values so far: (pair position, term) -> value, and
        ``(-1, "host")`` -> the host loss's (for logs and tests)."""
        out = dict(self._scale)
        if self._host0 is not None:
            out[_HOST] = self._host0
        return out

    def _settle(self, found: dict[tuple[int, str], float], keys: list) -> None:
        """Set the normalisers of ``keys`` still unset from this call's values
        ``found`` (reduced over the ranks with ``reduce``)."""
        todo = [k for k in keys if k not in self._scale]
        if self._host0 is None:
            todo.insert(0, _HOST)
        if not todo:
            return
        if self.reduce is None:
            for key in todo:
                if key in found:
                    self._store(key, found[key])
            return
        flat = []
        for key in todo:
            flat += [found[key], 1.0] if key in found else [0.0, 0.0]
        total = self.reduce(torch.tensor(flat, dtype=torch.float64)).tolist()
        for j, key in enumerate(todo):
            value, count = total[2 * j], total[2 * j + 1]
            if count > 0:
                self._store(key, value / count)

    def _store(self, key: tuple[int, str], value: float) -> None:
        if key == _HOST:
            self._host0 = value
        else:
            self._scale[key] = value

    def __call__(
        self,
        pairs: Sequence[RouterPair],
        host_loss: Tensor | None = None,
        slots: int | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """(routing loss to add to the host loss, raw term values for logging).

        ``slots``: the number of routers the block has; a call that leaves one out
        (the look-ahead on a step it skips) then still divides by all of them, so
        the routers it does see keep their weight against the host loss.
        """
        found: dict[tuple[int, str], float] = {}
        if self._host0 is None and host_loss is not None:
            h = float(host_loss.detach())
            found[_HOST] = h if h == h and h != float("inf") else 1.0
        device = pairs[0].logits.device if pairs else torch.device("cpu")
        computed: list[tuple[int, str, Tensor, float]] = []
        used = 0
        for i, pair in enumerate(pairs):
            if not self.lambdas:
                break
            prep = prepare(pair)
            if prep is None:
                continue
            used += 1
            for name, t in _terms(prep, self.config, list(self.lambdas)).items():
                value = float(t.detach())
                computed.append((i, name, t, value))
                if value > self.floor:
                    found[(i, name)] = value
        width = max(len(pairs), slots or 0) if self.lambdas else 0
        self._settle(found, [(i, n) for i in range(width) for n in self.lambdas])
        host0 = max(self._host0, self.floor) if self._host0 is not None else 1.0
        total = torch.zeros((), dtype=torch.float32, device=device)
        sums: dict[str, float] = {n: 0.0 for n in self.lambdas}
        for i, name, t, value in computed:
            sums[name] += value
            norm = self._scale.get((i, name), self.floor)
            total = total + (self.lambdas[name] * host0 / norm) * t.float()
        if used:
            total = total / max(used, slots or 0)
            terms = {n: v / used for n, v in sums.items()}
        else:
            terms = {}
        if self.calls == 0 or not self.first:
            self.first = dict(terms)
        self.last = dict(terms)
        self.calls += 1
        return total, terms
