"""Does splitting fused projections (`lora_ablate.model.surgery.split_fused_projections`) cost throughput?

    .venv/bin/python benchmarks/bench_split.py [--n-layer 2] [--steps 10] [--batch-size 16]
        [--seq-len 64] [--device auto] [--repeats 3] [--threads N] [--json OUT] [--quick]

One process, a randomly initialised GPT2ForSequenceClassification (no downloads; the same
seed for every arm), the same fixed random token batches, and four arms, each a plain PEFT
loop (AdamW, forward, backward, step) with LoRA r=8 and the head (`score`) trainable:

  fused          the model as transformers builds it; LoRA on the fused Conv1D `c_attn`
  split          split first (c_attn -> SplitProjection of q/k/v nn.Linears, other Conv1D ->
                 nn.Linear), then LoRA on `c_attn.q`, `c_attn.k`, `c_attn.v`
  fused_frozen   unsplit; LoRA only on the MLP `c_fc` (a Conv1D here); attention frozen
  split_frozen   split; LoRA only on `c_fc` (an nn.Linear here); attention frozen

fused/split differ in adapter size too (one r=8 on a 768->2304 layer vs three on 768->768),
which is what `targets=qkv` means with and without the split. fused_frozen/split_frozen
have identical adapters (checked), so their ratio is the cleanest measure of what the
split itself costs: three matmuls + a concat instead of one, and Linear instead of Conv1D.

Before timing, the split model's logits are compared with the fused model's (eval mode,
fp32) on the first batch: both arms compute the same function. Each arm gets one untimed
warm-up run of --warmup-steps, then the repeats interleave the arms, in reverse order on
odd repeats so drift over time hits both sides of a pair alike. "seconds" is the training
loop alone (wall, torch.cuda.synchronize on CUDA); "cpu s" the process CPU time of the same
stretch, the steadier measure with one thread on a shared machine. Ratios are paired within
a repeat (split speed / fused speed; > 1: split is faster) and reported as median [min-max].
CUDA: bf16 autocast. CPU: fp32. Never assert on these numbers.
"""

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

ARMS = ("fused", "split", "fused_frozen", "split_frozen")
PAIRS = (("split", "fused"), ("split_frozen", "fused_frozen"))
RANK = 8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--n-embd", type=int, default=768)
    p.add_argument("--n-head", type=int, default=12)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup-steps", type=int, default=3, help="untimed steps per arm, once, before the repeats")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: 1 on CPU, torch's on CUDA)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write every measurement here")
    p.add_argument("--quick", action="store_true", help="tiny GPT-2, few steps: < 30 s, for the test")
    args = p.parse_args(argv)
    if args.quick:
        args.n_layer, args.n_embd, args.n_head = 2, 128, 4
        args.steps, args.batch_size, args.seq_len, args.repeats, args.warmup_steps = 4, 8, 32, 2, 1
    args.warmup_steps = min(args.warmup_steps, args.steps)
    return args


def now(device) -> float:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def base_model(args: argparse.Namespace, split: bool):
    """The same random GPT-2 for every arm (seeded), split in place when asked."""
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from lora_ablate.model.architectures import split_rules_for
    from lora_ablate.model.surgery import split_fused_projections

    config = GPT2Config(
        n_layer=args.n_layer,
        n_embd=args.n_embd,
        n_head=args.n_head,
        n_positions=max(128, args.seq_len),
        pad_token_id=0,
        num_labels=2,
    )
    torch.manual_seed(args.seed)
    model = GPT2ForSequenceClassification(config)
    if split:
        split_fused_projections(model, split_rules_for(model.config))
    return model


def arm_model(args: argparse.Namespace, arm: str):
    from peft import LoraConfig, get_peft_model

    split = arm.startswith("split")
    if arm.endswith("frozen"):
        targets = ["c_fc"]
    else:  # PEFT matches a name or a dotted suffix: c_attn.q hits every layer's split child
        targets = ["c_attn.q", "c_attn.k", "c_attn.v"] if split else ["c_attn"]
    model = base_model(args, split)
    lora = LoraConfig(
        r=RANK,
        lora_alpha=2 * RANK,
        lora_dropout=0.0,
        target_modules=targets,
        modules_to_save=["score"],
        fan_in_fan_out=not split,  # transformers' Conv1D stores (in, out); nn.Linear (out, in)
    )
    return get_peft_model(model, lora)


def make_batches(args: argparse.Namespace, vocab: int) -> list[tuple[Any, Any]]:
    """Fixed random tokens (never the pad id 0, so no padding) and labels."""
    import torch

    gen = torch.Generator().manual_seed(args.seed)
    shape = (args.batch_size, args.seq_len)
    return [
        (torch.randint(1, vocab, shape, generator=gen), torch.randint(0, 2, (args.batch_size,), generator=gen))
        for _ in range(args.steps)
    ]


def logit_difference(args: argparse.Namespace, batch, device) -> tuple[float, float]:
    """(max |logits(split) - logits(fused)|, max |logits(fused)|) before training, eval mode, fp32."""
    import torch

    ids = batch[0].to(device)
    with torch.no_grad():
        fused = base_model(args, split=False).to(device).eval()(input_ids=ids).logits
        split = base_model(args, split=True).to(device).eval()(input_ids=ids).logits
    return float((split - fused).abs().max()), float(fused.abs().max())


def run_arm(args: argparse.Namespace, arm: str, batches, device) -> dict[str, Any]:
    import torch

    model = arm_model(args, arm).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3, weight_decay=0.0)
    amp = device.type == "cuda"
    model.train()
    start_wall, start_cpu = now(device), time.process_time()
    for ids, labels in batches:
        ids, labels = ids.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds, cpu = now(device) - start_wall, time.process_time() - start_cpu
    return {
        "seconds": seconds,
        "cpu_s": cpu,
        "steps": len(batches),
        "tokens": sum(ids.numel() for ids, _ in batches),
        "n_train": sum(p.numel() for p in trainable),
        "final_loss": float(loss.detach()),
    }


def spread(values: list[float]) -> tuple[float, list[float]]:
    return statistics.median(values), [min(values), max(values)]


def summarize(runs: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    arms = {}
    for arm in ARMS:
        rows = [rep[arm] for rep in runs]
        seconds, seconds_range = spread([r["seconds"] for r in rows])
        cpu, cpu_range = spread([r["cpu_s"] for r in rows])
        tokens = rows[0]["tokens"]
        arms[arm] = {
            "seconds": seconds,
            "seconds_range": seconds_range,
            "cpu_s": cpu,
            "cpu_s_range": cpu_range,
            "tokens": tokens,
            "tokens_per_s": tokens / seconds,
            "cpu_tokens_per_s": tokens / cpu if cpu > 0 else None,
            "n_train": rows[0]["n_train"],
        }
    ratios = {}
    for fast, ref in PAIRS:
        wall, wall_range = spread([rep[ref]["seconds"] / rep[fast]["seconds"] for rep in runs])
        entry = {"wall": wall, "wall_range": wall_range}
        if all(rep[fast]["cpu_s"] > 0 for rep in runs):
            entry["cpu"], entry["cpu_range"] = spread([rep[ref]["cpu_s"] / rep[fast]["cpu_s"] for rep in runs])
        ratios[f"{fast}/{ref}"] = entry
    return {"arms": arms, "ratios": ratios}


def print_report(summary: dict[str, Any]) -> None:
    print(f"\n{'arm':<13} {'seconds':>8} {'cpu s':>8} {'tokens/s':>10} {'tok/cpu s':>10} {'trainable':>10}")
    print("-" * 64)
    for arm, r in summary["arms"].items():
        cpu_rate = f"{r['cpu_tokens_per_s']:,.0f}" if r["cpu_tokens_per_s"] else "n/a"
        print(
            f"{arm:<13} {r['seconds']:>8.2f} {r['cpu_s']:>8.2f} {r['tokens_per_s']:>10,.0f} "
            f"{cpu_rate:>10} {r['n_train']:>10,}"
        )
    print("\nspeed ratios (split / fused; > 1: split is faster), paired within a repeat: median [min-max]")
    print(f"{'pair':<26} {'wall':>22} {'cpu':>22}")
    print("-" * 72)
    for name, r in summary["ratios"].items():
        cells = [
            f"{r[k]:.3f} [{r[k + '_range'][0]:.3f}-{r[k + '_range'][1]:.3f}]" if k in r else "n/a"
            for k in ("wall", "cpu")
        ]
        print(f"{name:<26} {cells[0]:>22} {cells[1]:>22}")
    print(
        f"max |logit(split) - logit(fused)| before training: {summary['logit_max_abs_diff']:.3g} "
        f"(fp32, eval; max |logit| {summary['logit_max_abs']:.3g})"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")  # peft calls a deprecated name
    cuda = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    device = torch.device("cuda" if cuda else "cpu")
    # One thread on CPU by default: on a shared machine, OpenMP threads waiting on a busy
    # core make steps slower at random, which drowns a few-percent difference.
    args.threads = args.threads or (torch.get_num_threads() if cuda else 1)
    torch.set_num_threads(args.threads)

    batches = make_batches(args, vocab=50257)
    diff, scale = logit_difference(args, batches[0], device)
    print(
        f"GPT-2 {args.n_layer} layers x {args.n_embd}, batch {args.batch_size} x {args.seq_len}, "
        f"{args.steps} steps, {args.repeats} repeats, {args.threads} thread(s) on {device}; "
        f"logit diff split vs fused {diff:.3g}",
        flush=True,
    )
    for arm in ARMS:  # untimed: first-use costs (allocator, kernels, lazy imports) out of the way
        run_arm(args, arm, batches[: args.warmup_steps], device)
    runs = []
    for repeat in range(args.repeats):
        order = ARMS if repeat % 2 == 0 else ARMS[::-1]
        rep = {}
        for arm in order:
            rep[arm] = run_arm(args, arm, batches, device)
            print(f"  repeat {repeat + 1} {arm:<13} {rep[arm]['seconds']:7.2f} s", flush=True)
        runs.append(rep)
    if runs and runs[0]["split_frozen"]["n_train"] != runs[0]["fused_frozen"]["n_train"]:
        raise RuntimeError("the frozen pair must train the same adapters: it no longer isolates the split")

    summary = summarize(runs) | {
        "device": str(device),
        "precision": "bf16 autocast" if cuda else "fp32",
        "logit_max_abs_diff": diff,
        "logit_max_abs": scale,
    }
    print_report(summary)
    out = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "summary": summary,
        "runs": runs,
        "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
    }
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
