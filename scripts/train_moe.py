"""Train a shipped benchmark MoE from scratch: a byte-level BPE tokenizer and a
small Qwen3MoeForCausalLM (``--arch qwen3_moe``, the first shipped model) or
DeepseekV3ForCausalLM (``--arch deepseek_v3``, the second), on the package-sourced
corpus (scripts/build_corpus.py).

Deterministic given ``--seed`` (and the thread count, fixed at 2): the tokenizer,
the document order, the batch windows and the initialisation all come from the
seed, and the number of steps is fixed by ``--steps``. ``--minutes`` is only a
safety cap: if it cuts training short the log says so (``stopped_early``) and the
run is no longer reproducible step for step.

The default size is the one shipped (docs/model.md says why): 6 MoE layers, hidden
256, 32 experts of width 64, top-2, renormalised top-k weights (as Qwen3 ships),
tied embeddings, vocab 4096. The load-balancing loss is the Switch loss per layer
(averaged over layers), not transformers' pooled-over-layers one, so that every
layer's experts are used.

``--arch deepseek_v3`` (docs/model.md): 6 layers, the first dense (MLP width 512),
5 MoE layers of 16 routed experts of width 64 in 4 groups (top-2 groups, top-4
experts), one shared expert of width 64, sigmoid scores with
``e_score_correction_bias``, MLA attention (kv rank 128). Balance as DeepSeek-V3
trains it: the selection bias moves by ``--bias-rate`` times the sign of each
expert's load deficit after every step (auxiliary-loss-free balancing), plus a small
Switch loss on the normalised sigmoid scores (``--aux``, default 0.001 there).

Usage::

    python scripts/train_moe.py                      # the shipped run (750 steps;
                                                     # ~12 min on 2 free cores)
    python scripts/train_moe.py --steps 60 --out /tmp/smoke   # smoke run
    python scripts/train_moe.py --arch deepseek_v3          # the second shipped
                                                     # model (~20 min)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_corpus import DATA_DIR, DEFAULT_CACHE, build, load_split  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "vsraq_modifier" / "data"
#: where each architecture's shipped model lives (vsraq_modifier/data/__init__.py)
MODEL_DIRS = {"qwen3_moe": DATA / "model", "deepseek_v3": DATA / "model_deepseek_v3"}
#: per-architecture defaults, applied where the option was not given
ARCH_DEFAULTS = {
    "qwen3_moe": {"experts": 32, "top_k": 2, "aux": 0.01},
    "deepseek_v3": {"experts": 16, "top_k": 4, "aux": 0.001},
}
EOS = "<|endoftext|>"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    a = ap.add_argument
    a("--arch", choices=sorted(MODEL_DIRS), default="qwen3_moe",
      help="model architecture: the first (qwen3_moe) or second (deepseek_v3) "
           "shipped model")
    a("--out", type=Path, default=None,
      help="model folder to write (default: the architecture's shipped model, "
           "which it replaces)")
    a("--cache", type=Path, default=DEFAULT_CACHE,
      help="corpus cache of scripts/build_corpus.py (built when empty)")
    a("--seed", type=int, default=0,
      help="seeds the tokenizer, document order, batches and initialisation")
    a("--steps", type=int, default=750, help="optimizer steps (fixed, for determinism)")
    a("--minutes", type=float, default=30.0,
      help="hard cap on the whole run; a run it cuts short says so in train_log.json")
    a("--threads", type=int, default=2,
      help="torch threads (results are deterministic for a given count)")
    a("--device", default="cpu", help="cuda only for exploring settings")
    a("--vocab", type=int, default=4096, help="BPE vocabulary size")
    a("--layers", type=int, default=6, help="decoder layers, every one MoE")
    a("--hidden", type=int, default=256, help="hidden size")
    a("--heads", type=int, default=4, help="query heads (head_dim 64)")
    a("--kv-heads", type=int, default=2, help="key/value heads")
    a("--experts", type=int, default=None,
      help="routed experts per layer (default 32; deepseek_v3: 16)")
    a("--top-k", type=int, default=None,
      help="experts each token takes (default 2; deepseek_v3: 4)")
    a("--expert-width", type=int, default=64, help="moe_intermediate_size")
    a("--no-norm-topk", action="store_true", help="norm_topk_prob=False")
    a("--aux", type=float, default=None,
      help="per-layer load-balancing coefficient (default 0.01; deepseek_v3: 0.001)")
    a("--n-group", type=int, default=4, help="deepseek_v3: expert groups")
    a("--topk-group", type=int, default=2, help="deepseek_v3: groups each token may use")
    a("--shared-experts", type=int, default=1, help="deepseek_v3: shared experts")
    a("--first-dense", type=int, default=1,
      help="deepseek_v3: leading dense layers (first_k_dense_replace)")
    a("--dense-width", type=int, default=512, help="deepseek_v3: dense MLP width")
    a("--bias-rate", type=float, default=1e-3,
      help="deepseek_v3: step of the selection-bias balancing update")
    a("--z-loss", type=float, default=0.0, help="router z-loss coefficient")
    a("--batch", type=int, default=8, help="sequences per step")
    a("--seq", type=int, default=512, help="tokens per sequence")
    a("--lr", type=float, default=3e-3,
      help="peak AdamW learning rate (cosine to 10 %%)")
    a("--warmup", type=int, default=100, help="linear warm-up steps")
    a("--weight-decay", type=float, default=0.1,
      help="AdamW weight decay (not on norms and routers)")
    a("--eval-tokens", type=int, default=32768,
      help="held-out tokens for the final perplexity")
    a("--experts-impl", default="grouped_mm", help="transformers experts kernel")
    a("--log-every", type=int, default=20, help="steps between progress lines")
    args = ap.parse_args(argv)
    for key, value in ARCH_DEFAULTS[args.arch].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.out is None:
        args.out = MODEL_DIRS[args.arch]
    return args


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def train_tokenizer(texts: list[str], vocab: int):
    """Byte-level BPE on the training documents only; wrapped for save_pretrained."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, min_frequency=2, special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=EOS, model_max_length=1024)


def encode(tokenizer, texts: list[str]) -> torch.Tensor:
    """All documents, EOS after each, as one int32 stream."""
    eos = tokenizer.convert_tokens_to_ids(EOS)
    ids: list[int] = []
    for enc in tokenizer.backend_tokenizer.encode_batch(texts):
        ids.extend(enc.ids)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.int32)


def make_config(args: argparse.Namespace, tokenizer):
    if args.arch == "deepseek_v3":
        return make_deepseek_config(args, tokenizer)
    from transformers import Qwen3MoeConfig

    eos = tokenizer.convert_tokens_to_ids(EOS)
    config = Qwen3MoeConfig(
        vocab_size=len(tokenizer), hidden_size=args.hidden,
        intermediate_size=4 * args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        head_dim=args.hidden // args.heads, max_position_embeddings=1024,
        num_experts=args.experts, num_experts_per_tok=args.top_k,
        moe_intermediate_size=args.expert_width, norm_topk_prob=not args.no_norm_topk,
        router_aux_loss_coef=args.aux, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
    )
    config._experts_implementation = args.experts_impl
    return config


def make_deepseek_config(args: argparse.Namespace, tokenizer):
    """A small DeepSeek-V3: MLA attention, a dense first layer, routed + shared
    experts, sigmoid group-limited routing with a selection bias."""
    from transformers import DeepseekV3Config

    eos = tokenizer.convert_tokens_to_ids(EOS)
    config = DeepseekV3Config(
        vocab_size=len(tokenizer), hidden_size=args.hidden,
        intermediate_size=args.dense_width, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, num_key_value_heads=args.heads,
        q_lora_rank=None, kv_lora_rank=128, qk_rope_head_dim=32,
        qk_nope_head_dim=32, v_head_dim=64, max_position_embeddings=1024,
        n_routed_experts=args.experts, num_experts_per_tok=args.top_k,
        n_group=args.n_group, topk_group=args.topk_group,
        n_shared_experts=args.shared_experts,
        first_k_dense_replace=args.first_dense,
        moe_intermediate_size=args.expert_width, norm_topk_prob=not args.no_norm_topk,
        routed_scaling_factor=2.5, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
    )
    config._experts_implementation = args.experts_impl
    return config


def model_class(arch: str):
    import transformers

    return {"qwen3_moe": transformers.Qwen3MoeForCausalLM,
            "deepseek_v3": transformers.DeepseekV3ForCausalLM}[arch]


class GateTaps:
    """The router outputs of every DeepSeek-V3 MoE layer on the last forward
    (transformers does not return them for this family)."""

    def __init__(self, model) -> None:
        self.gates = [m.mlp.gate for m in model.model.layers if hasattr(m.mlp, "gate")]
        self.out: list[tuple[torch.Tensor, torch.Tensor]] = []
        for gate in self.gates:
            gate.register_forward_hook(self._hook)

    def _hook(self, _m, _args, output) -> None:
        logits, _weights, indices = output
        self.out.append((logits, indices))

    def take(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out, self.out = self.out, []
        return out


def sigmoid_balance_loss(taps: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Switch loss per layer on the normalised sigmoid scores and the experts the
    router chose (bias and group limit included), mean over layers."""
    losses = []
    for logits, chosen in taps:
        scores = logits.float().sigmoid()
        probs = scores / scores.sum(-1, keepdim=True)
        n_exp = probs.shape[-1]
        frac = torch.zeros(n_exp, device=probs.device).scatter_add_(
            0, chosen.reshape(-1), torch.ones(chosen.numel(), device=probs.device))
        frac = frac / chosen.numel()
        losses.append(n_exp * (frac * probs.mean(0)).sum())
    return torch.stack(losses).mean()


@torch.no_grad()
def update_selection_bias(gates, taps, rate: float) -> None:
    """DeepSeek-V3's auxiliary-loss-free balancing: raise the selection bias of an
    under-loaded expert by ``rate``, lower an over-loaded one's."""
    for gate, (_logits, chosen) in zip(gates, taps):
        load = torch.bincount(chosen.reshape(-1), minlength=gate.num_experts).float()
        gate.e_score_correction_bias += rate * torch.sign(load.mean() - load)


def balance_loss(router_logits: tuple[torch.Tensor, ...], top_k: int) -> torch.Tensor:
    """Switch load-balancing loss per layer (E * sum_e f_e P_e), mean over layers."""
    losses = []
    for logits in router_logits:
        probs = logits.float().softmax(-1)
        n_exp = probs.shape[-1]
        chosen = probs.topk(top_k, dim=-1).indices
        frac = torch.zeros(n_exp, device=probs.device).scatter_add_(
            0, chosen.reshape(-1), torch.ones(chosen.numel(), device=probs.device))
        frac = frac / chosen.numel()
        losses.append(n_exp * (frac * probs.mean(0)).sum())
    return torch.stack(losses).mean()


def z_loss(router_logits: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return torch.stack(
        [z.float().logsumexp(-1).pow(2).mean() for z in router_logits]).mean()


@torch.no_grad()
def eval_ppl(model, ids: torch.Tensor, seq: int, device: str) -> float:
    model.eval()
    nll, count = 0.0, 0
    for chunk in ids.split(seq):
        if chunk.numel() < 2:
            continue
        x = chunk.long().to(device)[None]
        logits = model(input_ids=x, use_cache=False).logits[0].float()
        nll += F.cross_entropy(logits[:-1], x[0, 1:], reduction="sum").item()
        count += chunk.numel() - 1
    model.train()
    return math.exp(nll / count)


def lr_at(step: int, args: argparse.Namespace) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    t0 = time.time()
    torch.set_num_threads(args.threads)
    # grouped_mm's backward sums each token's k expert gradients in an order that
    # varies between runs with 2 threads; deterministic mode fixes the order
    torch.use_deterministic_algorithms(True)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    if not (args.cache / "splits" / "train.jsonl").exists():
        build(args.cache)
    manifest = json.loads((args.cache / "manifest.json").read_text())
    train_docs = load_split("train", args.cache)
    random.Random(args.seed).shuffle(train_docs)
    texts = [d.text for d in train_docs]
    tokenizer = train_tokenizer(texts, args.vocab)
    data = encode(tokenizer, texts)
    # the shipped held-out text: never trained on, only for the final perplexity
    held_ids = encode(tokenizer, [(DATA_DIR / "heldout.txt").read_text("utf-8")])
    held_ids = held_ids[: args.eval_tokens]
    t_tok = time.time() - t0
    print(f"tokenizer + encoding {t_tok:.0f}s: {data.numel()} train tokens, "
          f"{sum(len(t.encode()) for t in texts) / data.numel():.2f} bytes/token",
          flush=True)

    config = make_config(args, tokenizer)
    torch.manual_seed(args.seed)
    model = model_class(args.arch)(config).to(args.device)
    taps = GateTaps(model) if args.arch == "deepseek_v3" else None
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params / 1e6:.2f} M parameters", flush=True)
    def decays(name: str, p: torch.Tensor) -> bool:  # matrices, not norms/routers
        return p.ndim >= 2 and "gate.weight" not in name

    decay = [p for n, p in model.named_parameters() if decays(n, p)]
    no_decay = [p for n, p in model.named_parameters() if not decays(n, p)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    gen = torch.Generator().manual_seed(args.seed)
    span = args.seq + 1
    log: list[dict] = []
    stopped_early = False
    model.train()
    t_train = time.time()
    step = 0
    for step in range(args.steps):
        if time.time() - t0 > args.minutes * 60:
            stopped_early = True
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args)
        starts = torch.randint(0, data.numel() - span, (args.batch,), generator=gen)
        batch = torch.stack([data[s:s + span] for s in starts.tolist()]).long()
        batch = batch.to(args.device)
        if taps is None:
            out = model(input_ids=batch[:, :-1], output_router_logits=True,
                        use_cache=False)
            router = out.router_logits
            bal = balance_loss(router, args.top_k)
        else:
            out = model(input_ids=batch[:, :-1], use_cache=False)
            gate_out = taps.take()
            router = tuple(z for z, _ in gate_out)
            bal = sigmoid_balance_loss(gate_out)
        ce = F.cross_entropy(out.logits.float().reshape(-1, config.vocab_size),
                             batch[:, 1:].reshape(-1))
        loss = ce + args.aux * bal
        if args.z_loss:
            loss = loss + args.z_loss * z_loss(router)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if taps is not None:
            update_selection_bias(taps.gates, gate_out, args.bias_rate)
        if step % args.log_every == 0 or step == args.steps - 1:
            el = time.time() - t_train
            rec = {"step": step, "loss": round(ce.item(), 4),
                   "balance": round(bal.item(), 4),
                   "lr": round(lr_at(step, args), 6), "seconds": round(el, 1)}
            log.append(rec)
            eta = el / (step + 1) * (args.steps - step - 1)
            print(f"step {step}/{args.steps} loss {rec['loss']:.3f} "
                  f"bal {rec['balance']:.3f} "
                  f"{(step + 1) / el:.2f} it/s eta {eta / 60:.1f} min", flush=True)
    steps_done = step + (0 if stopped_early else 1)
    ppl = eval_ppl(model, held_ids, args.seq, args.device)
    print(f"held-out perplexity {ppl:.2f} ({held_ids.numel()} tokens)", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    model = model.to("cpu", dtype=torch.bfloat16)
    model.config.use_cache = True
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    record = {
        "seed": args.seed,
        "args": {k: (str(v) if isinstance(v, Path) else v)
                 for k, v in vars(args).items() if k not in {"out", "cache"}},
        "parameters": n_params,
        "train_tokens": data.numel(),
        "tokens_seen": steps_done * args.batch * args.seq,
        "steps_done": steps_done,
        "stopped_early": stopped_early,
        "heldout_perplexity_fp32": round(ppl, 3),
        "heldout_eval_tokens": held_ids.numel(),
        "wall_seconds": round(time.time() - t0, 1),
        "tokenizer_seconds": round(t_tok, 1),
        "torch": torch.__version__,
        "corpus": {"archives": manifest["archives"],
                   "splits": {k: v["sha256"] for k, v in manifest["splits"].items()}},
        "train_text_sha256": _hash("\x00".join(texts)),
        "loss_curve": log,
    }
    (args.out / "train_log.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"saved to {args.out} in {record['wall_seconds'] / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
