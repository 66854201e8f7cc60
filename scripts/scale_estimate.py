"""Memory and time the routing objective adds at real scale, on paper (docs/scale.md).

Nothing here loads a model: the configs below are plain numbers, passed to the same
estimate the runs check before they start (``vsraq_modifier.memory``), at the hosts'
default calibration sizes (read from the installed auto_round and llmcompressor).
The time ratio scales the look-ahead's measured share on the shipped model
(docs/results.md, "Time on idle cores") by the ratio of multiply-accumulates per
token; see docs/scale.md for the derivation and its assumptions.

    python scripts/scale_estimate.py            # the tables of docs/scale.md
    python scripts/scale_estimate.py --json     # the same numbers, one JSON object
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from vsraq_modifier.memory import GIB, estimate_routing_memory

#: where each value comes from. "tf-default": the default of the transformers 5.17
#: config class (printed by ``--sources``); "card": the model's published
#: config.json on its model card, not downloadable here (written from the card).
MODELS: dict[str, dict[str, Any]] = {
    "Qwen3-30B-A3B": dict(
        config_class="Qwen3MoeConfig",
        hidden_size=2048,
        num_attention_heads=32,
        num_key_value_heads=4,
        head_dim=128,  # card (the class leaves head_dim unset: hidden/heads = 64)
        intermediate_size=6144,
        moe_intermediate_size=768,
        num_hidden_layers=48,
        num_experts=128,
        top_k=8,
        shared_experts=0,
        dense_layers=[],
        vocab_size=151936,
        n_group=1,
        layer_types=None,
        sliding_window=None,
        from_card=["num_hidden_layers", "head_dim"],  # class default: 24 layers
    ),
    "gpt-oss-120b": dict(
        config_class="GptOssConfig",  # defaults: the 120b's (36 layers, 128 experts)
        hidden_size=2880,
        num_attention_heads=64,
        num_key_value_heads=8,
        head_dim=64,
        intermediate_size=2880,
        moe_intermediate_size=2880,
        num_hidden_layers=36,
        num_experts=128,
        top_k=4,
        shared_experts=0,
        dense_layers=[],
        vocab_size=201088,
        n_group=1,
        sliding_window=128,
        layer_types=["sliding_attention", "full_attention"] * 18,
    ),
    "DeepSeek-V3 (671B)": dict(
        config_class="DeepseekV3Config",  # its defaults are DeepSeek-V3's
        hidden_size=7168,
        num_attention_heads=128,
        num_key_value_heads=128,
        head_dim=64,  # qk_rope_head_dim; MLA, see q_lora_rank etc.
        intermediate_size=18432,
        moe_intermediate_size=2048,
        num_hidden_layers=61,
        num_experts=256,
        top_k=8,
        shared_experts=1,
        dense_layers=[0, 1, 2],
        vocab_size=129280,
        n_group=8,
        layer_types=None,
        sliding_window=None,
        mla=dict(
            q_lora_rank=1536,
            kv_lora_rank=512,
            qk_nope_head_dim=128,
            qk_rope_head_dim=64,
            v_head_dim=128,
        ),
    ),
}


#: the shipped benchmark model (vsraq_modifier/data/model/config.json) and the
#: benchmark's sequence length (benchmarks/run.py: 128 x 256, batch 8)
def shipped() -> dict[str, Any]:
    """The shipped model's config (vsraq_modifier/data/model/config.json)."""
    from vsraq_modifier.data import shipped_model_dir

    with open(f"{shipped_model_dir()}/config.json", encoding="utf-8") as f:
        c = json.load(f)
    extra = dict(top_k=c["num_experts_per_tok"], num_experts=c["num_local_experts"])
    return {**c, **extra, "shared_experts": 0, "dense_layers": c["mlp_only_layers"]}


SHIPPED_SEQLEN = 256
#: docs/results.md, "Time on idle cores" and the paragraph after it: vsraq with
#: the look-ahead 1.27x mse (W4A16 and W3A16); without the look-ahead 1.05-1.14x
#: (main run, CPU seconds). So the look-ahead's share is 0.13-0.22 of mse's time.
MEASURED_TOTAL = 1.27
MEASURED_NO_LOOKAHEAD = (1.05, 1.14)
GPU_GB = 80


def _check_against_transformers(name: str, m: dict[str, Any]) -> list[str]:
    """Values that differ from the transformers config class's defaults."""
    import transformers

    cfg = getattr(transformers, m["config_class"])()
    keys = {
        "hidden_size": "hidden_size",
        "num_attention_heads": "num_attention_heads",
        "num_key_value_heads": "num_key_value_heads",
        "intermediate_size": "intermediate_size",
        "moe_intermediate_size": "moe_intermediate_size",
        "num_hidden_layers": "num_hidden_layers",
        "num_experts": "num_local_experts",
        "top_k": "num_experts_per_tok",
        "vocab_size": "vocab_size",
    }
    if m["config_class"] == "GptOssConfig":
        keys["moe_intermediate_size"] = "intermediate_size"
    out = []
    for ours, theirs in keys.items():
        default = getattr(cfg, theirs, None)
        if default != m[ours]:
            out.append(f"{name}: {ours}={m[ours]} (class default {default})")
    return out


def host_defaults() -> dict[str, dict[str, int]]:
    """The hosts' default calibration sizes, read from the installed packages."""
    from auto_round.autoround import AutoRound
    from llmcompressor.args.dataset_arguments import DatasetArguments
    from llmcompressor.modifiers.autoround import AutoRoundModifier

    sig = inspect.signature(AutoRound.__new__)
    ar = {
        k: int(sig.parameters[k].default) for k in ("nsamples", "seqlen", "batch_size")
    }
    fields = DatasetArguments.__dataclass_fields__
    samples = int(fields["num_calibration_samples"].default)
    if fields["max_seq_length"].default is not None:  # pragma: no cover - a new host
        raise SystemExit("llmcompressor now has a max_seq_length default: update this")
    lc = dict(
        nsamples=samples,
        seqlen=ar["seqlen"],  # no default in llmcompressor (None: the tokenizer's)
        batch_size=int(AutoRoundModifier.model_fields["batch_size"].default),
    )
    return {"AutoRound": ar, "llm-compressor": lc}


def _sites(m: dict[str, Any]) -> list[Any]:
    spec = SimpleNamespace(num_experts=m["num_experts"])
    return [
        SimpleNamespace(layer=i, spec=spec)
        for i in range(m["num_hidden_layers"])
        if i not in m["dense_layers"]
    ]


#: the config fields memory.py reads
MEMORY_KEYS = ("hidden_size", "num_attention_heads", "head_dim")
MEMORY_KEYS += ("num_key_value_heads", "intermediate_size")


def routing_memory(
    m: dict[str, Any], tokens: int, batch_tokens: int, lookahead: bool = True
) -> Any:
    config = SimpleNamespace(**{k: m[k] for k in MEMORY_KEYS})
    return estimate_routing_memory(
        _sites(m),
        num_layers=m["num_hidden_layers"],
        config=config,
        tokens=tokens,
        batch_tokens=batch_tokens,
        lookahead=lookahead,
        activation_bytes=2,
    )  # bfloat16 activations: AutoRound's amp dtype on a GPU


# --- multiply-accumulates per token (forward) ----------------------------------
def _attention_macs(m: dict[str, Any], layer: int, seqlen: int) -> float:
    h, heads = m["hidden_size"], m["num_attention_heads"]
    if "mla" in m:
        a = m["mla"]
        qk = a["qk_nope_head_dim"] + a["qk_rope_head_dim"]
        proj = (
            h * a["q_lora_rank"]
            + a["q_lora_rank"] * heads * qk
            + h * (a["kv_lora_rank"] + a["qk_rope_head_dim"])
            + a["kv_lora_rank"] * heads * (a["qk_nope_head_dim"] + a["v_head_dim"])
            + heads * a["v_head_dim"] * h
        )
        d_score = qk + a["v_head_dim"]
    else:
        d, kv = m["head_dim"], m["num_key_value_heads"]
        proj = 2 * h * heads * d + 2 * h * kv * d
        d_score = 2 * d
    span = seqlen / 2  # causal: a token attends to seqlen/2 positions on average
    types = m.get("layer_types")
    if types and types[layer] == "sliding_attention" and m["sliding_window"]:
        span = min(span, m["sliding_window"])
    return proj + span * heads * d_score


def _mlp_macs(m: dict[str, Any], layer: int) -> float:
    h = m["hidden_size"]
    if layer in m["dense_layers"]:
        return 3 * h * m["intermediate_size"]
    experts = (m["top_k"] + m["shared_experts"]) * 3 * h * m["moe_intermediate_size"]
    return experts + h * m["num_experts"]


def lookahead_share(m: dict[str, Any], seqlen: int) -> float:
    """Look-ahead MACs per step over the tuned blocks' (summed over the model's
    blocks): tuned block forward+backward ~ 3x its forward; the look-ahead's
    forward+backward to its input (frozen weights) ~ 2x its forward."""
    moe = [i for i in range(m["num_hidden_layers"]) if i not in m["dense_layers"]]
    block = ahead = 0.0
    for i in range(m["num_hidden_layers"]):
        block += 3 * (_attention_macs(m, i, seqlen) + _mlp_macs(m, i))
        later = [j for j in moe if j > i]
        if later:
            nxt = later[0]
            path = sum(
                _attention_macs(m, j, seqlen) + _mlp_macs(m, j)
                for j in range(i + 1, nxt)
            )
            path += (
                _attention_macs(m, nxt, seqlen) + m["hidden_size"] * m["num_experts"]
            )
            ahead += 2 * path
    return ahead / block


@dataclass
class Row:
    model: str
    host: str
    tokens: int
    batch_tokens: int
    reference_gb: float
    lookahead_gb: float
    host_gb: float  # host_gb(): the host's own block state, a lower bound


#: bytes per weight the host holds while tuning a block: bfloat16 weight (2) and
#: SignRound's float32 rounding offset ``value`` with its gradient (4 + 4;
#: auto_round/wrapper.py, ``p_dtype = torch.float32``); min/max scales, per group,
#: are left out
HOST_BYTES_PER_WEIGHT = 10


def _block_params(m: dict[str, Any]) -> float:
    """The largest decoder layer's weights (all experts, not the k routed): what
    the host moves to the GPU to tune it."""
    h = m["hidden_size"]
    attn = _attention_macs(m, 0, 0)  # seqlen 0: the projections only
    moe = (m["num_experts"] + m["shared_experts"]) * 3 * h * m["moe_intermediate_size"]
    dense = 3 * h * m["intermediate_size"] if m["dense_layers"] else 0
    return attn + max(moe + h * m["num_experts"], dense)


def host_gb(m: dict[str, Any], tokens: int) -> float:
    """A lower bound on the host's own GPU memory for one block: its tuning state
    and the block's cached inputs and outputs (bfloat16, every calibration token)."""
    cache = 2 * tokens * m["hidden_size"] * 2
    return (HOST_BYTES_PER_WEIGHT * _block_params(m) + cache) / GIB


def rows(hosts: dict[str, dict[str, int]]) -> list[Row]:
    out = []
    for name, m in MODELS.items():
        for host, d in hosts.items():
            tokens, bt = d["nsamples"] * d["seqlen"], d["batch_size"] * d["seqlen"]
            est = routing_memory(m, tokens, bt)
            out.append(
                Row(
                    name,
                    host,
                    tokens,
                    bt,
                    est.reference_bytes / GIB,
                    est.lookahead_bytes / GIB,
                    host_gb(m, tokens),
                )
            )
    return out


def options(m: dict[str, Any], d: dict[str, int]) -> list[str]:
    """Settings (each alone) whose routing extra + host lower bound fit one GPU."""
    found = []
    n, b = d["nsamples"], d["batch_size"]
    cands = [("defaults", n, b, True), ("lookahead=False", n, b, False)]
    cands += [(f"batch_size={b // f}", n, b // f, True) for f in (2, 4)]
    cands += [(f"nsamples={n // f}", n // f, b, True) for f in (2, 4)]
    for label, n, b, la in cands:
        tokens = n * d["seqlen"]
        est = routing_memory(m, tokens, b * d["seqlen"], lookahead=la)
        host = host_gb(m, tokens)
        if est.total_bytes / GIB + host <= GPU_GB:
            found.append(f"{label} ({est.total_bytes / GIB + host:.1f} GB)")
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--sources",
        action="store_true",
        help="list the values that differ from the transformers defaults",
    )
    args = p.parse_args(argv)
    if args.sources:
        for name, m in MODELS.items():
            diffs = _check_against_transformers(name, m)
            print(
                f"{name}: {m['config_class']} defaults"
                + ("; differs: " + ", ".join(diffs) if diffs else ", all equal")
            )
        return 0
    hosts = host_defaults()
    table = rows(hosts)
    share_shipped = lookahead_share(shipped(), SHIPPED_SEQLEN)
    # the measured split, both ends: (rest, look-ahead) = (0.05, 0.22), (0.14, 0.13)
    ends = [(x - 1, MEASURED_TOTAL - x) for x in MEASURED_NO_LOOKAHEAD]
    lo, hi = sorted(la for _, la in ends)
    times = {}
    for name, m in MODELS.items():
        scale = lookahead_share(m, hosts["AutoRound"]["seqlen"]) / share_shipped
        every = {}
        for n in (1, 2, 4):
            vals = [1 + rest + la * scale / n for rest, la in ends]
            every[n] = (min(vals), max(vals))
        times[name] = dict(macs_ratio_vs_shipped=scale, ratio=every)
    if args.json:
        print(
            json.dumps(
                dict(
                    hosts=hosts,
                    memory=[r.__dict__ for r in table],
                    shipped_lookahead_macs_share=share_shipped,
                    time=times,
                ),
                indent=1,
                default=str,
            )
        )
        return 0
    print("hosts' defaults:", json.dumps(hosts))
    print(
        "\n| model | host | tokens | per step | reference logits GB | look-ahead GB "
        "| routing total GB | host lower bound GB | fits 80 GB with |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in table:
        fits = options(MODELS[r.model], hosts[r.host])
        print(
            f"| {r.model} | {r.host} | {r.tokens} | {r.batch_tokens} | "
            f"{r.reference_gb:.2f} | {r.lookahead_gb:.2f} | "
            f"{r.reference_gb + r.lookahead_gb:.2f} | {r.host_gb:.1f} | "
            f"{'; '.join(fits) or 'none: the host alone is over, see device_map'} |"
        )
    print(
        f"\nshipped model: look-ahead MACs / tuned-block MACs per step "
        f"{share_shipped:.3f} (seqlen {SHIPPED_SEQLEN}); measured share of mse's "
        f"time {lo:.2f}-{hi:.2f}"
    )
    print(
        "\n| model | look-ahead MACs share vs shipped | vsraq / mse | "
        "lookahead_every=2 | lookahead_every=4 |"
    )
    print("|---|---|---|---|---|")
    for name, t in times.items():
        r = t["ratio"]
        print(
            f"| {name} | {t['macs_ratio_vs_shipped']:.2f}x | "
            + " | ".join(f"{r[n][0]:.2f}-{r[n][1]:.2f}x" for n in (1, 2, 4))
            + " |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
