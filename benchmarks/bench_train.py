"""Training throughput of the harness against a plain PEFT loop, HF Trainer and full fine-tuning.

    .venv/bin/python benchmarks/bench_train.py [--model minilm] [--steps 30] [--batch-size 32]
        [--max-length 64] [--device auto] [--repeats 3] [--threads N] [--json OUT] [--quick]

One process, one model, the rt_sentiment train split and five arms, interleaved per repeat
(A B C D E A B C D E). The first four train the same batches (index lists from
`lora_ablate.run.batches.train_index_batches`, so the same examples and non-pad token count):

  harness  `runner.prepare` + `train.fit`, exactly what `lora-ablate` runs (no evaluation)
  plain    a hand-written PEFT loop: tokenizer(padding=True) per batch, AdamW, backward, step
  trainer  `transformers.Trainer` on the same PEFT model and the same batches, in order
  full     the plain loop with every parameter trainable (full fine-tuning)

and the fifth, `trainer_default`, is Trainer as a user calls it: the same steps of the same
batch size, but its own shuffled batches padded to their longest row, so the harness's
length grouping counts. Ratios against it compare seconds for the same number of examples.

"seconds" is the training loop alone (fit / the loop / trainer.train()); "setup" is what
comes before it (the harness's setup is `prepare`: data, tokenisation, model, PEFT). The
matmul rate for MFU is measured in every repeat too, so it sees the same machine load.
Peak memory comes from one fresh subprocess per arm on CPU (VmHWM), and from
torch.cuda.max_memory_allocated on CUDA. Start-up (process start -> the first step begins) is
measured in fresh subprocesses for MiniLM and SmolLM2, and again for a second run in the
same process, which is what every further cell of a sweep pays. Never assert on these numbers.
"""

import argparse
import contextlib
import copy
import gc
import io
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ARMS = ("harness", "plain", "trainer", "full", "trainer_default")
SAME_BATCH_ARMS = ARMS[:4]  # trainer_default draws its own batches
STARTUP_MODELS = "minilm,smollm2"
FLOPS_NOTE = (
    "training FLOPs: full FT 6*N*T; LoRA 4*N*T + 6*N_train*T (forward + activation gradients through "
    "the frozen base, weight gradients only for the trainable LoRA+head parameters); N = non-embedding "
    "base parameters, N_train = trainable parameters, T = non-pad tokens (attention score FLOPs ignored). "
    "MFU = training FLOPs / median seconds / median torch.mm rate (measured once per repeat, same load)"
)


# --------------------------------------------------------------------------- setup


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        default="minilm",
        help="a model preset with a classification head (encoder)",
    )
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "bf16"),
        help="train.precision for every arm; `auto` is bf16 on CUDA and on CPUs with native bf16",
    )
    p.add_argument(
        "--no-fp32-harness",
        action="store_true",
        help="skip the harness at precision=fp32 (timed in every repeat when the run is in bf16)",
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--warmup-steps",
        type=int,
        default=5,
        help="untimed steps per arm, once, before the repeats",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for every arm and child (default: 1 on CPU, torch's default on CUDA)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--startup-models",
        default=STARTUP_MODELS,
        help="comma list; empty to skip (--quick: skipped)",
    )
    p.add_argument(
        "--no-memory",
        action="store_true",
        help="skip the per-arm memory subprocesses (CPU)",
    )
    p.add_argument("--json", type=Path, default=None, help="write every measurement here")
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny_bert, few steps: < 60 s, for the test",
    )
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # memory:ARM | startup:MODEL
    args = p.parse_args(argv)
    if args.quick:
        args.model, args.steps, args.batch_size, args.max_length = "tiny_bert", 4, 8, 32
        args.repeats = 2
        args.startup_models = "" if args.startup_models == STARTUP_MODELS else args.startup_models
        args.warmup_steps = min(args.warmup_steps, 2)
    args.warmup_steps = min(args.warmup_steps, args.steps)
    return args


def overrides(args: argparse.Namespace, model: str, steps: int) -> list[str]:
    return [
        f"model={model}",
        "task=rt_sentiment",
        f"task.max_length={args.max_length}",
        "targets=qv",
        "budget=reference",
        "logger=none",
        f"seed={args.seed}",
        f"train.max_steps={steps}",
        f"train.batch_size={args.batch_size}",
        "train.eval_every=0",
        f"train.device={args.device}",
        f"train.precision={args.precision}",
    ]


def compose(over: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from lora_ablate.app.store import register_configs, resource_dir

    register_configs()
    with initialize_config_dir(config_dir=str(resource_dir("conf")), version_base="1.3"):
        return OmegaConf.to_object(hydra_compose(config_name="config", overrides=over))


class Context:
    """What every arm shares: config, resolved plan, device, data, tokenizer and batches."""

    def __init__(self, args: argparse.Namespace, steps: int):
        import torch

        from lora_ablate.run.batches import train_index_batches
        from lora_ablate.model.loading import load_tokenizer
        from lora_ablate.plan.resolve import resolve_run
        from lora_ablate.run.precision import autocast_dtype, resolve_precision
        from lora_ablate.run.devices import pick_device
        from lora_ablate.data.tasks import load_task

        self.args, self.steps = args, steps
        self.cfg = compose(overrides(args, args.model, steps))
        self.resolved = resolve_run(self.cfg)
        if self.resolved.task_format != "head":
            raise SystemExit(
                f"--model {args.model} trains with label words; the plain arms need an encoder with a head"
            )
        self.device = pick_device(self.cfg.train.device)
        self.precision = resolve_precision(self.cfg.train.precision, self.device)
        self.amp = autocast_dtype(self.precision)
        if self.device.type == "cuda":  # as runner.run does
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        data = load_task(self.cfg.task)
        self.texts = [e.text for e in data.train]
        self.labels = [e.label for e in data.train]
        self.tokenizer = load_tokenizer(self.cfg.model, self.resolved.source)
        self.ids = self.tokenizer(self.texts, truncation=True, max_length=args.max_length)["input_ids"]
        stream = train_index_batches([len(i) for i in self.ids], args.batch_size, self.cfg.seed)
        self.batches = [next(stream) for _ in range(steps)]
        self.tokens = sum(len(self.ids[i]) for b in self.batches for i in b)
        self.padded = sum(len(b) * max(len(self.ids[i]) for i in b) for b in self.batches)
        arch = self.resolved.arch_map
        self.lora_targets = [
            arch["q"].split(".")[-1],
            arch["v"].split(".")[-1],
        ]  # BERT: query, value
        self.head = list(self.resolved.plan.head_modules)


def now(device) -> float:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class Clock:
    """Wall and process CPU time of a stretch. With one thread on a shared machine CPU time is
    the steadier measure: it leaves out the time other processes held the core."""

    def __init__(self, device):
        self.device, self.wall, self.cpu = device, now(device), time.process_time()

    def lap(self) -> tuple[float, float]:
        wall, cpu = now(self.device), time.process_time()
        out = (wall - self.wall, cpu - self.cpu)
        self.wall, self.cpu = wall, cpu
        return out


def base_model(ctx: Context):
    import torch
    from transformers import AutoModelForSequenceClassification

    num_labels = ctx.cfg.task.num_labels
    torch.manual_seed(ctx.cfg.seed)
    if ctx.resolved.source.name_or_path is None:  # inline config (tiny_bert): random weights
        config = ctx.resolved.model_config.__class__.from_dict(ctx.resolved.model_config.to_dict())
        config.num_labels = num_labels
        return AutoModelForSequenceClassification.from_config(config)
    return AutoModelForSequenceClassification.from_pretrained(
        ctx.resolved.source.name_or_path, num_labels=num_labels, dtype=torch.float32
    )


def in_run_precision(ctx: Context, model):
    """The plain arms get what the harness gets in bf16: frozen matmul weights held in bf16
    (and autocast in the loop), so the comparison is loop against loop, not fp32 against bf16."""
    import torch

    from lora_ablate.run.precision import hold_frozen_matmul_weights

    if ctx.precision == "bf16":
        hold_frozen_matmul_weights(model, torch.bfloat16)
    return model


def peft_model(ctx: Context):
    from peft import LoraConfig, get_peft_model

    rank = ctx.cfg.budget.reference_rank
    lora = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=ctx.lora_targets,
        modules_to_save=ctx.head,
    )
    return in_run_precision(ctx, get_peft_model(base_model(ctx), lora))


def param_counts(model) -> tuple[int, int]:
    """(N: non-embedding base parameters, trainable parameters)."""
    from torch import nn

    embedding = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    base = sum(
        p.numel()
        for name, p in model.named_parameters()
        if id(p) not in embedding and "lora_" not in name and "modules_to_save" not in name
    )
    return base, sum(p.numel() for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------- arms


def plain_loop(ctx: Context, model, lr: float) -> int:
    """The hand-written loop every arm is compared with; returns the non-pad tokens seen."""
    import torch

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    model.train()
    tokens = 0
    for indices in ctx.batches:
        enc = ctx.tokenizer(
            [ctx.texts[i] for i in indices],
            padding=True,
            truncation=True,
            max_length=ctx.args.max_length,
            return_tensors="pt",
        )
        tokens += int(enc["attention_mask"].sum())  # on the host: no device sync
        enc = {k: v.to(ctx.device, non_blocking=True) for k, v in enc.items()}
        labels = torch.tensor([ctx.labels[i] for i in indices], device=ctx.device)
        with torch.autocast(ctx.device.type, dtype=ctx.amp, enabled=ctx.amp is not None):
            loss = model(**enc, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return tokens


def run_harness(ctx: Context) -> dict[str, Any]:
    from lora_ablate.run.loggers import open_logger
    from lora_ablate.run.session import prepare
    from lora_ablate.run.loop import fit

    clock = Clock(ctx.device)
    session = prepare(ctx.cfg, ctx.resolved, ctx.device)
    setup, _ = clock.lap()
    logger = open_logger(
        ctx.cfg.logger,
        name="bench",
        group=None,
        job_type="bench",
        config={},
        run_dir=Path("."),
    )
    with contextlib.redirect_stderr(io.StringIO()):  # the tqdm bar still formats, just unseen
        result = fit(
            session,
            ctx.cfg.train,
            seed=ctx.cfg.seed,
            head_names=ctx.resolved.plan.head_modules,
            logger=logger,
        )
    seconds, cpu = clock.lap()
    n, trainable = param_counts(session.model)
    return {
        "setup_s": setup,
        "seconds": seconds,
        "cpu_s": cpu,
        "fit_seconds": result.train_seconds,
        "steps": result.steps,
        "tokens": result.train_tokens,
        "n_base": n,
        "n_train": trainable,
        "lora": True,
    }


def run_plain(ctx: Context, full: bool = False) -> dict[str, Any]:
    clock = Clock(ctx.device)
    model = (base_model(ctx) if full else peft_model(ctx)).to(ctx.device)
    setup, _ = clock.lap()
    tokens = plain_loop(ctx, model, lr=2e-5 if full else ctx.cfg.train.lr)
    seconds, cpu = clock.lap()
    n, trainable = param_counts(model)
    return {
        "setup_s": setup,
        "seconds": seconds,
        "cpu_s": cpu,
        "steps": len(ctx.batches),
        "tokens": tokens,
        "n_base": n,
        "n_train": trainable,
        "lora": not full,
    }


def run_trainer(ctx: Context, same_batches: bool = True) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as scratch:  # saves nothing, but wants one
        return _train_with_trainer(ctx, scratch, same_batches)


def _train_with_trainer(ctx: Context, scratch: str, same_batches: bool) -> dict[str, Any]:
    """same_batches: the harness's batches in order (loop against loop). Otherwise Trainer
    as a user calls it: its shuffled sampler over the whole training split, padding to the
    longest row of each batch (what the harness's length grouping is measured against)."""
    import dataclasses

    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    clock = Clock(ctx.device)
    model = peft_model(ctx)
    order = [i for b in ctx.batches for i in b] if same_batches else range(len(ctx.ids))
    rows = [{"input_ids": ctx.ids[i], "labels": ctx.labels[i]} for i in order]
    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    options = {
        "output_dir": scratch,
        "max_steps": len(ctx.batches),
        "per_device_train_batch_size": ctx.args.batch_size,
        "learning_rate": ctx.cfg.train.lr,
        "weight_decay": 0.0,
        "warmup_steps": round(ctx.cfg.train.warmup_ratio * len(ctx.batches)),
        "lr_scheduler_type": "linear",
        "max_grad_norm": ctx.cfg.train.grad_clip,
        "report_to": [],
        "save_strategy": "no",
        "eval_strategy": "no",
        "logging_steps": 10**9,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "seed": ctx.cfg.seed,
        "bf16": ctx.amp is not None,
        "use_cpu": ctx.device.type == "cpu",
    }
    trainer_class = Trainer
    if same_batches:  # sequential sampling of rows laid out batch by batch
        if "train_sampling_strategy" in fields:
            options["train_sampling_strategy"] = "sequential"
        if "group_by_length" in fields:
            options["group_by_length"] = False

        class InOrder(Trainer):
            def _get_train_sampler(self, *a, **k):
                return torch.utils.data.SequentialSampler(self.train_dataset)

        trainer_class = InOrder

    pad = DataCollatorWithPadding(ctx.tokenizer)
    seen = {"tokens": 0, "padded": 0}

    def collate(features):  # counts what it really trained on, to check it against the other arms
        batch = pad(features)
        seen["tokens"] += int(batch["attention_mask"].sum())
        seen["padded"] += batch["attention_mask"].numel()
        return batch

    trainer = trainer_class(
        model=model,
        args=TrainingArguments(**options),
        train_dataset=rows,
        data_collator=collate,
    )
    setup, _ = clock.lap()
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its final metrics
        out = trainer.train()
    seconds, cpu = clock.lap()
    n, trainable = param_counts(model)
    return {
        "setup_s": setup,
        "seconds": seconds,
        "cpu_s": cpu,
        "trainer_runtime": out.metrics.get("train_runtime"),
        "steps": out.global_step,
        "tokens": seen["tokens"],
        "padded_tokens": seen["padded"],
        "n_base": n,
        "n_train": trainable,
        "lora": True,
    }


def run_arm(ctx: Context, arm: str, rss_peak: bool = False) -> dict[str, Any]:
    import torch

    torch.set_num_threads(ctx.args.threads)  # again: nothing an arm does may change it
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(ctx.device)
    if rss_peak:
        before = reset_rss_peak()
    result = {
        "harness": run_harness,
        "plain": run_plain,
        "trainer": run_trainer,
        "full": lambda c: run_plain(c, full=True),
        "trainer_default": lambda c: run_trainer(c, same_batches=False),
    }[arm](ctx)
    if ctx.device.type == "cuda":
        result["peak_memory_bytes"] = int(torch.cuda.max_memory_allocated(ctx.device))
    elif rss_peak:
        result["rss_peak"] = {"baseline_rss_bytes": before, "peak_rss_bytes": rss_hwm()}
    result["threads"] = torch.get_num_threads()
    gc.collect()
    return result


def rss_hwm() -> int:
    """Peak resident set size of this process (VmHWM), bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_rss_peak() -> int:
    """Set VmHWM to the current RSS (Linux >= 4.0); returns it. Approximate per-arm peaks
    in one process: memory an earlier arm freed but the allocator kept is reused unseen."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return rss_hwm()


def matmul_rate(device, seconds: float, dtype=None) -> float:
    """FLOP/s of a large square matmul (2048 on CPU, 8192 on CUDA) in the dtype the run's
    matmuls use: bf16 under bf16 autocast, else fp32."""
    import torch

    dtype = dtype or torch.float32
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    count, start = 0, now(device)
    while True:
        torch.mm(a, b)
        count += 1
        elapsed = now(device) - start
        if elapsed >= seconds:
            return 2 * n**3 * count / elapsed


# --------------------------------------------------------------------------- children


def child_memory(args: argparse.Namespace, arm: str) -> None:
    """One arm in a fresh process: peak RSS after the shared setup and at the end."""
    import torch

    torch.set_num_threads(args.threads)
    ctx = Context(args, args.steps)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork+exec, so a child would report
    # its parent's peak if that were higher.
    before = rss_hwm()
    result = run_arm(ctx, arm)
    peak = rss_hwm()
    print(
        json.dumps(
            {
                "arm": arm,
                "baseline_rss_bytes": before,
                "peak_rss_bytes": peak,
                "steps": result["steps"],
            }
        )
    )


def child_startup(args: argparse.Namespace, model: str) -> None:
    """Process start -> first training step, with the time of each stage; then the
    same for a second run in the same process (another seed), which is what each further
    cell of a sweep pays: Hydra's basic launcher runs them in one process, joblib's
    workers are reused."""
    marks = {"main": time.time()}
    import torch

    marks["import torch"] = time.time()
    torch.set_num_threads(args.threads or 1)
    import transformers  # noqa: F401

    marks["import transformers"] = time.time()
    import peft  # noqa: F401

    marks["import peft"] = time.time()
    from lora_ablate.run import session as session_module
    from lora_ablate.run.devices import pick_device
    from lora_ablate.run.loggers import NullLogger
    from lora_ablate.plan.resolve import resolve_run
    from lora_ablate.run.loop import fit

    marks["import lora_ablate.run.runner"] = time.time()

    def first_step(seed: int, stages: dict[str, float]) -> None:
        cfg = compose(overrides(argparse.Namespace(**vars(args) | {"seed": seed}), model, 1))
        stages["compose"] = time.time()
        resolved = resolve_run(cfg)
        stages["resolve_run"] = time.time()
        session = session_module.prepare(cfg, resolved, pick_device(cfg.train.device))
        stages["prepare"] = time.time()
        with contextlib.redirect_stderr(io.StringIO()):
            fit(session, cfg.train, seed=cfg.seed, head_names=resolved.plan.head_modules, logger=NullLogger())
        stages["first step"] = time.time()

    first_step(args.seed, marks)
    next_run = {"main": time.time()}
    first_step(args.seed + 1, next_run)
    print(json.dumps({"cold": marks, "next_run": next_run}))


def spawn_children(args: argparse.Namespace, whats: list[str], parallel: bool) -> list[tuple[dict[str, Any], float]]:
    """Run `--child WHAT` processes, one after the other unless `parallel`."""
    base = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--model",
        args.model,
        "--steps",
        str(args.steps),
        "--batch-size",
        str(args.batch_size),
        "--max-length",
        str(args.max_length),
        "--device",
        args.device,
        "--precision",
        args.precision,
        "--threads",
        str(args.threads),
        "--seed",
        str(args.seed),
    ]
    env = os.environ | {"TQDM_DISABLE": "1"}
    results = []
    pending: list[tuple[str, subprocess.Popen, float]] = []

    def finish(what, proc, started):
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"child {what} failed ({proc.returncode}):\n{err[-3000:]}")
        results.append((json.loads(out.strip().splitlines()[-1]), started))

    for what in whats:
        started = time.time()
        proc = subprocess.Popen(
            base + ["--child", what],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        pending.append((what, proc, started))
        if not parallel:
            finish(*pending.pop())
    for item in pending:
        finish(*item)
    return results


def startup_stages(marks: dict[str, dict[str, float]], started: float) -> dict[str, dict[str, float]]:
    """Seconds per stage of the cold start (from process launch) and of the next run."""
    result = {}
    for run, origin in (("cold", started), ("next_run", marks["next_run"]["main"])):
        run_marks = marks[run]
        stages = {"interpreter start": run_marks["main"] - origin} if run == "cold" else {}
        previous = run_marks["main"]
        for name, t in run_marks.items():
            if name != "main":
                stages[name] = t - previous
                previous = t
        # Start-up ends where training begins; the first step itself is compute, shown apart.
        stages["start-up"] = run_marks["prepare"] - origin
        result[run] = stages
    return result


# --------------------------------------------------------------------------- report


def flops(r: dict[str, Any]) -> float:
    n, t = r["n_base"], r["tokens"]
    return (4 * n + 6 * r["n_train"]) * t if r["lora"] else 6 * n * t


def summarize(runs: list[dict[str, dict[str, Any]]], rates: list[float]) -> dict[str, dict[str, Any]]:
    """Medians over repeats; ratios are paired within a repeat, then the median taken."""
    med = statistics.median
    out = {}
    for arm in ARMS:
        rs = [rep[arm] for rep in runs]
        row = {
            "steps": rs[0]["steps"],
            "tokens": rs[0]["tokens"],
            "setup_s": med(r["setup_s"] for r in rs),
            "seconds": med(r["seconds"] for r in rs),
            "cpu_s": med(r["cpu_s"] for r in rs),
            "seconds_all": [r["seconds"] for r in rs],
            "cpu_s_all": [r["cpu_s"] for r in rs],
            "n_base": rs[0]["n_base"],
            "n_train": rs[0]["n_train"],
            "train_flops": flops(rs[0]),
        }
        if "padded_tokens" in rs[0]:
            row["padded_tokens"] = rs[0]["padded_tokens"]
        row["tokens_per_s"] = med(r["tokens"] / r["seconds"] for r in rs)
        row["examples_per_s"] = med(r["steps"] * r["batch"] / r["seconds"] for r in rs)
        row["mfu"] = flops(rs[0]) / row["seconds"] / med(rates)  # medians of each: steadier than paired
        if "peak_memory_bytes" in rs[0]:
            row["peak_memory_bytes"] = max(r["peak_memory_bytes"] for r in rs)
        out[arm] = row
    for arm in ARMS:
        for ref in ("plain", "trainer", "trainer_default"):
            for clock, key in (
                ("seconds", f"speed_vs_{ref}"),
                ("cpu_s", f"cpu_speed_vs_{ref}"),
            ):
                # Same steps of the same batch size (and, but for trainer_default, the same
                # batches): the inverse ratio of seconds is the ratio of speeds.
                ratios = [rep[ref][clock] / rep[arm][clock] for rep in runs]
                out[arm][key] = med(ratios)
                out[arm][f"{key}_range"] = [min(ratios), max(ratios)]
    return out


def print_report(args, summary, rates, memory, starts, tokens_check) -> None:
    def mib(b):
        return f"{b / 2**20:,.0f}" if b is not None else "-"

    cpu = summary["device"] == "cpu"
    print(
        f"\nmodel={args.model} batch={args.batch_size} max_length={args.max_length} steps={args.steps} "
        f"repeats={args.repeats} device={summary['device']} threads={args.threads} precision={summary['precision']}"
    )
    print(
        f"tokens per same-batch arm: non-pad {tokens_check['tokens']:,}, padded {tokens_check['padded']:,} "
        f"({tokens_check['tokens'] / tokens_check['padded']:.0%} real)"
    )
    if "padded_tokens" in summary["arms"]["trainer_default"]:
        d = summary["arms"]["trainer_default"]
        print(
            f"trainer_default (shuffled, padded per batch): non-pad {d['tokens']:,}, padded {d['padded_tokens']:,} "
            f"({d['tokens'] / d['padded_tokens']:.0%} real)"
        )
    width = max(len(a) for a in ARMS)
    head = (
        f"{'arm':<{width}} {'steps':>5} {'tokens':>8} {'setup s':>8} {'seconds':>8} {'cpu s':>8} {'tokens/s':>9} "
        f"{'ex/s':>7} {'peak MiB':>9} {'+MiB':>6} {'MFU':>7}"
    )
    print(head)
    print("-" * len(head))
    for arm in ARMS:
        r, m = summary["arms"][arm], memory.get(arm)
        peak = r.get("peak_memory_bytes", m["peak_rss_bytes"] if m else None)
        extra = m["peak_rss_bytes"] - m["baseline_rss_bytes"] if m else None
        print(
            f"{arm:<{width}} {r['steps']:>5} {r['tokens']:>8,} {r['setup_s']:>8.2f} {r['seconds']:>8.2f} "
            f"{r['cpu_s'] if cpu else math.nan:>8.2f} {r['tokens_per_s']:>9,.0f} {r['examples_per_s']:>7.1f} "
            f"{mib(peak):>9} {mib(extra):>6} {r['mfu']:>7.2%}"
        )
    print(
        "\nspeed ratios (arm / reference; > 1: the arm is faster), paired within a repeat: median [min-max]; "
        "'Trainer' trains the same batches in order, 'Trainer default' shuffles and pads as Trainer does by default"
    )
    clocks = ["wall", "cpu"] if cpu else ["wall"]
    refs = [("plain", "plain"), ("trainer", "Trainer"), ("trainer_default", "Trainer default")]
    columns = [(f"{'cpu_' if c == 'cpu' else ''}speed_vs_{ref}", f"vs {label}, {c}") for c in clocks for ref, label in refs]
    print(f"{'arm':<{width}} " + " ".join(f"{title:>24}" for _, title in columns))
    print("-" * (width + 25 * len(columns)))
    for arm in ARMS:
        r = summary["arms"][arm]
        cells = [f"{r[k]:.3f} [{r[k + '_range'][0]:.3f}-{r[k + '_range'][1]:.3f}]" for k, _ in columns]
        print(f"{arm:<{width}} " + " ".join(f"{c:>24}" for c in cells))
    h = summary["arms"]["harness"]
    line = (
        f"harness/plain = {h['speed_vs_plain']:.3f}x wall (target >= 0.97); harness/Trainer = "
        f"{h['speed_vs_trainer']:.3f}x on the same batches, {h['speed_vs_trainer_default']:.3f}x against "
        f"Trainer's default batching (target >= 1.3)"
    )
    if cpu:
        line += (
            f"; by CPU time {h['cpu_speed_vs_plain']:.3f}x, {h['cpu_speed_vs_trainer']:.3f}x and "
            f"{h['cpu_speed_vs_trainer_default']:.3f}x"
        )
    print(line)
    speedup = summary.get("precision_speedup")
    if speedup:
        print(
            f"harness precision={args.precision} ({speedup['precision']}) / precision=fp32 = {speedup['wall']:.3f}x wall "
            f"[{speedup['wall_range'][0]:.3f}-{speedup['wall_range'][1]:.3f}], {speedup['cpu']:.3f}x by CPU time "
            f"(same batches, this process; fp32 median {speedup['fp32_seconds']:.2f} s; target >= 1.5 on a CPU with bf16)"
        )
    if summary.get("memory_ratio"):
        print(f"memory LoRA (plain) / full FT: {summary['memory_ratio']:.3f} of peak ({summary['memory_basis']})")
    print(
        f"matmul rate: {statistics.median(rates) / 1e9:,.1f} GFLOP/s median "
        f"[{min(rates) / 1e9:,.1f}-{max(rates) / 1e9:,.1f}] ({summary['matmul']})"
    )
    h, f = summary["arms"]["harness"], summary["arms"]["full"]
    print(
        f"N (non-embedding base params) = {h['n_base']:,}; trainable LoRA+head = {h['n_train']:,}; "
        f"full FT trainable = {f['n_train']:,}"
    )
    print(FLOPS_NOTE)
    for model, runs in starts.items():
        for run, what in (("cold", "a fresh process"), ("next_run", "the next run in the same process")):
            stages = runs[run]
            parts = ", ".join(f"{k} {v:.2f}" for k, v in stages.items() if k not in ("start-up", "first step"))
            print(
                f"start-up {model}, {what}: {stages['start-up']:.2f} s to the first step ({parts}); "
                f"the first step itself {stages['first step']:.2f} s"
            )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.child and args.child.startswith("startup:"):  # before importing torch: that is part of start-up
        child_startup(args, args.child.split(":", 1)[1])
        return {}
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the weight-loading report, five times per repeat
    # One thread on CPU by default: on a shared 2-core machine, OpenMP threads that wait on a
    # busy core make a step 10-50x slower at random, which drowns every comparison.
    args.threads = args.threads or (torch.get_num_threads() if torch.cuda.is_available() else 1)
    torch.set_num_threads(args.threads)
    if args.child:
        child_memory(args, args.child.split(":", 1)[1])
        return {}
    ctx = Context(args, args.steps)
    print(
        f"{len(ctx.texts):,} training examples; running {args.repeats} repeats of {', '.join(ARMS)} "
        f"(+ matmul), {args.steps} steps each",
        flush=True,
    )
    if args.warmup_steps:  # untimed: first-use costs (kernels, allocator, lazy imports) out of the way
        warm = copy.copy(ctx)
        warm.steps, warm.batches = args.warmup_steps, ctx.batches[: args.warmup_steps]
        warm.cfg = compose(overrides(args, args.model, args.warmup_steps))
        for arm in ARMS:
            run_arm(warm, arm)
    mm_seconds = 0.5 if args.quick else 2.0
    runs, rates, fp32_runs = [], [], []
    fp32_ctx = None
    if ctx.precision != "fp32" and not args.no_fp32_harness:
        fp32_ctx = copy.copy(ctx)
        fp32_ctx.cfg = compose(overrides(args, args.model, args.steps) + ["train.precision=fp32"])
        fp32_ctx.precision, fp32_ctx.amp = "fp32", None
        if args.warmup_steps:
            warm_fp32 = copy.copy(fp32_ctx)
            warm_fp32.batches = ctx.batches[: args.warmup_steps]
            warm_fp32.cfg = compose(overrides(args, args.model, args.warmup_steps) + ["train.precision=fp32"])
            run_arm(warm_fp32, "harness")
    inprocess_memory = args.quick and ctx.device.type != "cuda" and not args.no_memory
    for repeat in range(args.repeats):
        rep = {}
        for arm in ARMS:
            rep[arm] = run_arm(ctx, arm, rss_peak=inprocess_memory) | {"batch": args.batch_size}
            print(
                f"  repeat {repeat + 1} {arm:<8} {rep[arm]['seconds']:7.2f} s",
                flush=True,
            )
        rates.append(matmul_rate(ctx.device, mm_seconds, ctx.amp))
        if fp32_ctx is not None:  # the same harness in fp32, timed next to it in this process
            fp32_runs.append(run_arm(fp32_ctx, "harness") | {"batch": args.batch_size})
            print(f"  repeat {repeat + 1} harness at fp32 {fp32_runs[-1]['seconds']:7.2f} s", flush=True)
        runs.append(rep)
    for rep in runs:
        for arm in SAME_BATCH_ARMS:
            if rep[arm]["tokens"] != ctx.tokens or rep[arm]["steps"] != args.steps:
                raise RuntimeError(
                    f"{arm} trained {rep[arm]['steps']} steps / {rep[arm]['tokens']} tokens, "
                    f"expected {args.steps} / {ctx.tokens}: the arms must see the same batches"
                )
    # Memory (CPU: a fresh process per arm) and start-up, after the timed part.
    # --quick: approximate per-arm peaks in this process (VmHWM reset), to stay under a minute.
    memory_arms = list(ARMS) if ctx.device.type != "cuda" and not args.no_memory and not inprocess_memory else []
    models = [m for m in args.startup_models.split(",") if m]
    children = spawn_children(
        args,
        [f"memory:{a}" for a in memory_arms] + [f"startup:{m}" for m in models],
        False,
    )
    memory = {a: r for a, (r, _) in zip(memory_arms, children)}
    if inprocess_memory:
        memory = {
            a: max(
                (rep[a].pop("rss_peak") for rep in runs),
                key=lambda m: m["peak_rss_bytes"],
            )
            for a in ARMS
        }
    starts = {m: startup_stages(r, t) for m, (r, t) in zip(models, children[len(memory_arms) :])}
    summary: dict[str, Any] = {
        "device": str(ctx.device),
        "precision": "bf16 autocast, frozen matmul weights in bf16" if ctx.amp is not None else "fp32",
        "matmul": f"{ctx.precision} {'8192x8192' if ctx.device.type == 'cuda' else '2048x2048'} torch.mm",
        "arms": summarize(runs, rates),
    }
    if fp32_runs:
        ratios = [f["seconds"] / rep["harness"]["seconds"] for f, rep in zip(fp32_runs, runs)]
        cpu_ratios = [f["cpu_s"] / rep["harness"]["cpu_s"] for f, rep in zip(fp32_runs, runs)]
        summary["precision_speedup"] = {
            "precision": ctx.precision,
            "fp32_seconds": statistics.median(f["seconds"] for f in fp32_runs),
            "wall": statistics.median(ratios),
            "wall_range": [min(ratios), max(ratios)],
            "cpu": statistics.median(cpu_ratios),
            "cpu_range": [min(cpu_ratios), max(cpu_ratios)],
        }
    if ctx.device.type == "cuda":
        summary["memory_ratio"] = (
            summary["arms"]["plain"]["peak_memory_bytes"] / summary["arms"]["full"]["peak_memory_bytes"]
        )
        summary["memory_basis"] = "torch.cuda.max_memory_allocated"
    elif memory:
        inc = {a: memory[a]["peak_rss_bytes"] - memory[a]["baseline_rss_bytes"] for a in ("plain", "full")}
        summary["memory_ratio"] = memory["plain"]["peak_rss_bytes"] / memory["full"]["peak_rss_bytes"]
        summary["memory_ratio_above_setup"] = inc["plain"] / inc["full"] if inc["full"] > 0 else None
        how = "VmHWM per arm in this process (approximate)" if inprocess_memory else "VmHWM of a fresh process per arm"
        above = f"{inc['plain'] / inc['full']:.3f}" if inc["full"] > 0 else "n/a"
        summary["memory_basis"] = (
            f"{how}; above the shared setup: {inc['plain'] / 2**20:,.0f} vs {inc['full'] / 2**20:,.0f} MiB = {above}"
        )
    tokens_check = {"tokens": ctx.tokens, "padded": ctx.padded}
    print_report(args, summary, rates, memory, starts, tokens_check)
    out = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "summary": summary,
        "runs": runs,
        "matmul_flops": rates,
        "memory": memory,
        "startup": starts,
        "tokens": tokens_check,
        "flops_formula": FLOPS_NOTE,
        "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
    }
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
