"""Several ranks for the BlockObjective tests: in one process (threads whose
reduce behaves like an all-reduce) and in real gloo processes."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import torch

from tests.helpers.objective import softmax_spec
from vsraq_modifier.config import VSRAQConfig
from vsraq_modifier.objective import BlockObjective, RouterPair

__all__ = ["ThreadRanks", "rank_pairs", "gloo_worker", "run_steps"]


class ThreadRanks:
    """``n`` ranks as threads of one process: each rank's reduce waits for every
    rank's vector and returns their mean (summed in rank order, so every rank
    gets the same tensor); vectors of different shapes fail, as a real
    all-reduce would hang."""

    def __init__(self, n: int = 2) -> None:
        self.n = n
        self._barrier = threading.Barrier(n)
        self._vectors: list[torch.Tensor | None] = [None] * n
        #: how many times each rank reduced
        self.calls = [0] * n

    def reduce_for(self, rank: int) -> Callable[[torch.Tensor], torch.Tensor]:
        def reduce(values: torch.Tensor) -> torch.Tensor:
            self._vectors[rank] = values.clone()
            self.calls[rank] += 1
            self._barrier.wait(timeout=30)
            vectors = list(self._vectors)
            self._barrier.wait(timeout=30)
            shapes = {tuple(v.shape) for v in vectors}
            if len(shapes) != 1:
                raise RuntimeError(f"ranks reduce different shapes: {shapes}")
            return torch.stack(vectors).sum(0) / self.n

        return reduce

    def run(self, work: Callable[[int], object]) -> list[object]:
        """``work(rank)`` on every rank at once; its results in rank order."""
        results: list[object] = [None] * self.n
        errors: list[BaseException] = []

        def target(rank: int) -> None:
            try:
                results[rank] = work(rank)
            except BaseException as exc:  # re-raised in the caller
                errors.append(exc)
                self._barrier.abort()

        threads = [threading.Thread(target=target, args=(r,)) for r in range(self.n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        if errors:
            raise errors[0]
        return results


def rank_pairs(rank: int, step: int, routers: int = 2) -> list[RouterPair]:
    """Router pairs that differ per rank and per step (their terms too)."""
    spec = softmax_spec()
    out = []
    for r in range(routers):
        g = torch.Generator().manual_seed(1000 * rank + 10 * step + r)
        ref = torch.randn(6, spec.num_experts, generator=g)
        noise = 0.1 * (1 + rank + r) * (1 + step)
        z = ref + noise * torch.randn(6, spec.num_experts, generator=g)
        out.append(RouterPair(z.requires_grad_(), ref, spec))
    return out


def run_steps(
    objective: BlockObjective, rank: int, steps: int = 3
) -> tuple[list[float], dict[str, float]]:
    """``steps`` calls of ``objective`` on rank ``rank``'s pairs and host losses:
    (the losses, the normalisers keyed "pair/term")."""
    losses = []
    for step in range(steps):
        host = torch.tensor(1.0 + rank + 0.1 * step)
        loss, _ = objective(rank_pairs(rank, step), host_loss=host, slots=2)
        losses.append(float(loss.detach()))
    norms = {f"{i}/{n}": v for (i, n), v in objective.normalisers.items()}
    return losses, norms


def gloo_worker(rank: int, world: int, store: str, out: str) -> None:
    """One real rank (torch.multiprocessing.spawn): gloo over a file store, a
    BlockObjective with ``mean_over_ranks``; writes its result to ``out``."""
    import torch.distributed as dist

    from vsraq_modifier.objective.combine import mean_over_ranks

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world
    )
    try:
        objective = BlockObjective(VSRAQConfig(), reduce=mean_over_ranks)
        losses, norms = run_steps(objective, rank)
        Path(out, f"rank{rank}.json").write_text(
            json.dumps({"losses": losses, "normalisers": norms})
        )
    finally:
        dist.destroy_process_group()
