"""SFT training throughput: the harness against a plain PEFT loop and TRL's SFTTrainer.

    python benchmarks/bench_sft.py [--model smollm2|tiny_llama] [--task bbc_headlines | --task local FILE]
        [--steps 10] [--batch-size 8] [--warmup-steps 2] [--repeats 3] [--precision auto|fp32|bf16]
        [--threads 1] [--json OUT]

One process, one model, one SFT task, three arms that train the same examples in the same
batches (the index lists the harness's own loop draws, run/batches.train_index_batches):

  harness  run/session.prepare + run/loop.fit: what `lora-ablate` runs (sft_batches, sft_loss)
  plain    get_peft_model + a hand-written loop: full logits, masked cross-entropy, AdamW
  trl      trl.SFTTrainer on a prompt/completion dataset: completion-only loss, no packing

Every arm builds its model from the same LoraConfig (the run's plan), in the run's precision
(bf16: autocast, frozen matmul weights held in bf16, as the harness does), and runs
warm-up + timed steps; only the timed steps count (marked at the end of the last warm-up
step and of the last step). Arms alternate order between repeats. Ratios are paired within
a repeat (harness tokens/s over the arm's; > 1: the harness is faster), median [min-max].
Tokens are non-pad input tokens; TRL tokenises prompt+completion itself, so its count is
checked against the harness's. Never assert on these numbers.

One file past ~350 lines on purpose: a script run on its own, whose three arms are meant to be
read side by side.
"""

import argparse
import contextlib
import io
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ARMS = ("harness", "plain", "trl")
LOCAL_VAL_TEST = 8  # a local file's validation and test splits: the benchmark only trains


@dataclass
class Marks:
    """Wall and CPU time at the end of the last warm-up step and of the last step."""

    warmup: int
    total: int
    stamps: dict[str, tuple[float, float]] = field(default_factory=dict)

    def stamp(self, name: str) -> None:
        self.stamps[name] = (time.perf_counter(), time.process_time())

    def start(self) -> None:
        if self.warmup == 0:
            self.stamp("start")

    def step_done(self, step: int) -> None:
        if step == self.warmup:
            self.stamp("start")
        if step == self.total:
            self.stamp("end")

    def seconds(self) -> tuple[float, float]:
        (w0, c0), (w1, c1) = self.stamps["start"], self.stamps["end"]
        return w1 - w0, c1 - c0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2", choices=("smollm2", "tiny_llama"))
    p.add_argument("--task", nargs="+", default=["bbc_headlines"], metavar="TASK",
                   help="an embedded SFT task (bbc_headlines), or: local FILE (a prompt/completion JSONL or CSV)")
    p.add_argument("--targets", default="qv")
    p.add_argument("--steps", type=int, default=10, help="timed steps per arm and repeat")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed steps before the timed ones, every run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-length", type=int, default=None, help="task.max_length (default: the task's)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: on a shared 2-core machine a team waiting on a busy core drowns the figures)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write every measurement here")
    args = p.parse_args(argv)
    if args.task[0] == "local" and len(args.task) != 2 or args.task[0] != "local" and len(args.task) != 1:
        p.error(f"--task {' '.join(args.task)}: give an embedded task name (e.g. --task bbc_headlines) or "
                "--task local FILE with one prompt/completion file.")
    for name in ("steps", "batch_size", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}.")
    if args.warmup_steps < 0:
        p.error(f"--warmup-steps must be 0 or more, got {args.warmup_steps}.")
    return args


def overrides(args: argparse.Namespace) -> list[str]:
    from lora_ablate.app.store import resource_dir

    if args.task[0] == "local":
        task = ["task=local", "task.format=sft", f"task.path={Path(args.task[1]).resolve()}",
                f"task.val_size={LOCAL_VAL_TEST}", f"task.test_size={LOCAL_VAL_TEST}"]
    elif (resource_dir("conf") / "task" / f"{args.task[0]}.yaml").is_file():
        task = [f"task={args.task[0]}"]
    else:
        tasks = sorted(p.stem for p in (resource_dir("conf") / "task").glob("*.yaml"))
        raise SystemExit(f"--task {args.task[0]}: no such task in this checkout (tasks: {', '.join(tasks)}); give an "
                         "embedded SFT task or --task local FILE with a prompt/completion JSONL or CSV.")
    return [f"model={args.model}", *task, f"targets={args.targets}", "budget=reference", "logger=none",
            f"seed={args.seed}", f"train.max_steps={args.warmup_steps + args.steps}",
            f"train.batch_size={args.batch_size}", "train.eval_every=0", "train.device=cpu",
            f"train.precision={args.precision}", *([f"task.max_length={args.max_length}"] if args.max_length else [])]


class Context:
    """What every arm shares: the run's config and plan, precision, data and batches."""

    def __init__(self, args: argparse.Namespace):
        import torch
        from hydra import compose, initialize_config_dir
        from omegaconf import OmegaConf

        from lora_ablate.app.store import register_configs, resource_dir
        from lora_ablate.data.encoded import sft_splits
        from lora_ablate.data.tasks import load_sft_task
        from lora_ablate.model.loading import load_tokenizer
        from lora_ablate.plan.resolve import resolve_run
        from lora_ablate.run.batches import train_index_batches
        from lora_ablate.run.precision import autocast_dtype, resolve_precision

        register_configs()
        with initialize_config_dir(config_dir=str(resource_dir("conf")), version_base="1.3"):
            self.cfg = OmegaConf.to_object(compose(config_name="config", overrides=overrides(args)))
        self.args, self.device = args, torch.device("cpu")
        self.resolved = resolve_run(self.cfg)
        if self.resolved.task_format != "sft":
            raise SystemExit(f"--task {' '.join(args.task)} is not an SFT task (format {self.resolved.task_format}).")
        self.precision = resolve_precision(self.cfg.train.precision, self.device)
        self.amp = autocast_dtype(self.precision)
        self.tokenizer = load_tokenizer(self.cfg.model, self.resolved.source)
        data = sft_splits(self.cfg.task, self.tokenizer)  # what prepare() reads, from the same memo
        if data.dropped.get("train"):
            raise SystemExit(f"{data.dropped['train']} training completions do not fit task.max_length="
                             f"{self.cfg.task.max_length}; raise --max-length so TRL and the harness see the same examples.")
        self.items = data.train
        self.examples = load_sft_task(self.cfg.task).train  # the same examples as text, for TRL, in item order
        stream = train_index_batches([len(i.input_ids) for i in self.items], args.batch_size, self.cfg.seed)
        self.batches = [next(stream) for _ in range(args.warmup_steps + args.steps)]
        timed = self.batches[args.warmup_steps:]
        self.tokens = sum(len(self.items[i].input_ids) for b in timed for i in b)
        self.completion_tokens = sum(self.items[i].completion_length for b in timed for i in b)


def peft_model(ctx: Context):
    """The base causal LM as a user loads it, wrapped with the run's LoraConfig, in the run's precision."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from lora_ablate.plan.adapters import lora_config
    from lora_ablate.run.precision import hold_frozen_matmul_weights

    torch.manual_seed(ctx.cfg.seed)
    source = ctx.resolved.source
    if source.inline_config is not None:  # tiny_llama: random weights from its config, as load_model makes them
        with torch.random.fork_rng():
            torch.manual_seed(0)
            base = AutoModelForCausalLM.from_config(ctx.resolved.model_config)
    else:
        base = AutoModelForCausalLM.from_pretrained(source.name_or_path, dtype=torch.float32)
    model = get_peft_model(base, lora_config(ctx.resolved.plan, ctx.cfg.lora))
    if ctx.precision == "bf16":
        hold_frozen_matmul_weights(model, torch.bfloat16)
    return model


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def run_harness(ctx: Context) -> dict[str, Any]:
    from lora_ablate.run.loggers import NullLogger
    from lora_ablate.run.loop import fit
    from lora_ablate.run.progress import RunProgress
    from lora_ablate.run.session import prepare

    marks = Marks(ctx.args.warmup_steps, len(ctx.batches))

    class Timed(RunProgress):  # the loop reports each finished step here
        def phase(self, what, *args):
            pass

        def start_training(self, steps):
            self._steps = steps
            marks.start()

        def stepped(self, step, loss=None, tokens_per_second=None):
            marks.step_done(step)

    session = prepare(ctx.cfg, ctx.resolved, ctx.device)
    fit(session, ctx.cfg.train, seed=ctx.cfg.seed, head_names=ctx.resolved.plan.head_modules,
        logger=NullLogger(), progress=Timed("bench", bar=False))
    return {"marks": marks, "tokens": ctx.tokens, "completion_tokens": ctx.completion_tokens,
            "trainable": trainable(session.model)}


def run_plain(ctx: Context) -> dict[str, Any]:
    """What a user writes: right-padded rows, labels -100 on prompt and padding, the full
    logits, cross-entropy on the shifted labels, AdamW."""
    import torch
    import torch.nn.functional as F

    model = peft_model(ctx).to(ctx.device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=ctx.cfg.train.lr)
    pad = ctx.tokenizer.pad_token_id
    marks = Marks(ctx.args.warmup_steps, len(ctx.batches))
    model.train()
    marks.start()
    for step, indices in enumerate(ctx.batches, start=1):
        rows = [ctx.items[i] for i in indices]
        width = max(len(r.input_ids) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for k, r in enumerate(rows):
            ids[k, : len(r.input_ids)] = torch.tensor(r.input_ids)
            mask[k, : len(r.input_ids)] = 1
            labels[k, r.prompt_length : len(r.input_ids)] = torch.tensor(r.input_ids[r.prompt_length :])
        with torch.autocast(ctx.device.type, dtype=ctx.amp, enabled=ctx.amp is not None):
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        marks.step_done(step)
    return {"marks": marks, "tokens": ctx.tokens, "completion_tokens": ctx.completion_tokens,
            "trainable": trainable(model)}


def run_trl(ctx: Context) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-sft-trl-") as scratch:  # saves nothing, but wants one
        return _train_with_trl(ctx, scratch)


def _train_with_trl(ctx: Context, scratch: str) -> dict[str, Any]:
    import datasets
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    train = ctx.cfg.train
    steps = len(ctx.batches)
    rows = [{"prompt": ctx.examples[i].prompt, "completion": ctx.examples[i].completion}
            for b in ctx.batches for i in b]  # laid out batch by batch, read in order
    config = SFTConfig(
        output_dir=scratch, max_steps=steps, per_device_train_batch_size=ctx.args.batch_size,
        learning_rate=train.lr, weight_decay=train.weight_decay, warmup_steps=round(train.warmup_ratio * steps),
        lr_scheduler_type="constant_with_warmup" if train.schedule == "constant" else train.schedule,
        max_grad_norm=train.grad_clip, optim="adamw_torch_fused", seed=ctx.cfg.seed,
        bf16=ctx.precision == "bf16", use_cpu=True, gradient_checkpointing=False,  # TRL's default is on
        max_length=ctx.cfg.task.max_length, packing=False, completion_only_loss=True,
        report_to=[], save_strategy="no", eval_strategy="no", logging_strategy="no", disable_tqdm=True,
        dataloader_num_workers=0,
    )
    marks = Marks(ctx.args.warmup_steps, steps)

    class Timed(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            marks.start()

        def on_step_end(self, args, state, control, **kwargs):
            marks.step_done(state.global_step)

    class InOrder(SFTTrainer):
        def _get_train_sampler(self, *args, **kwargs):
            return torch.utils.data.SequentialSampler(self.train_dataset)

    model = peft_model(ctx)
    datasets.disable_progress_bars()  # a bar per preparation stage, every run
    trainer = InOrder(model=model, args=config, train_dataset=Dataset.from_list(rows),
                      processing_class=ctx.tokenizer, callbacks=[Timed()])
    collate, seen = trainer.data_collator, []

    def counting(features):  # what TRL really trains on, to check against the harness's tokens
        batch = collate(features)
        seen.append((int(batch["attention_mask"].sum()), int((batch["labels"] != -100).sum())))
        return batch

    trainer.data_collator = counting
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its final metrics
        trainer.train()
    timed = seen[ctx.args.warmup_steps:]
    return {"marks": marks, "tokens": sum(t for t, _ in timed), "completion_tokens": sum(c for _, c in timed),
            "trainable": trainable(model)}


def run_arm(ctx: Context, arm: str) -> dict[str, Any]:
    import gc

    import torch

    torch.set_num_threads(ctx.args.threads)  # again: nothing an arm does may change it
    out = {"harness": run_harness, "plain": run_plain, "trl": run_trl}[arm](ctx)
    wall, cpu = out.pop("marks").seconds()
    gc.collect()
    return out | {"seconds": wall, "cpu_s": cpu}


def cpu_line() -> str:
    """Which CPU a figure came from: model name, logical cores and the flags matmuls use."""
    import os

    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name in ("", platform.machine(), platform.processor()):
                name = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "asimd", "bf16", "sve")
    return f"cpu: {name}, {os.cpu_count()} logical cores; flags: {' '.join(f for f in wanted if f in flags) or 'none of ' + ', '.join(wanted)}"


def versions() -> dict[str, str]:
    import peft
    import torch
    import transformers
    import trl

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "trl": trl.__version__}


def summarize(runs: list[dict[str, dict[str, Any]]], steps: int) -> dict[str, Any]:
    med = statistics.median
    arms = {}
    for arm in ARMS:
        rs = [rep[arm] for rep in runs]
        arms[arm] = {
            "tokens": rs[0]["tokens"], "completion_tokens": rs[0]["completion_tokens"],
            "trainable": rs[0]["trainable"],
            "seconds": med(r["seconds"] for r in rs), "cpu_s": med(r["cpu_s"] for r in rs),
            "ms_per_step": 1000 * med(r["seconds"] for r in rs) / steps,
            "cpu_ms_per_step": 1000 * med(r["cpu_s"] for r in rs) / steps,
            "tokens_per_s": med(r["tokens"] / r["seconds"] for r in rs),
            "cpu_tokens_per_s": med(r["tokens"] / r["cpu_s"] for r in rs),
        }
    ratios = {}
    for ref in ("trl", "plain"):
        for clock in ("seconds", "cpu_s"):
            # tokens/s of the harness over the arm's, paired within a repeat
            paired = [(rep["harness"]["tokens"] / rep["harness"][clock]) / (rep[ref]["tokens"] / rep[ref][clock])
                      for rep in runs]
            ratios[f"{ref}_{'wall' if clock == 'seconds' else 'cpu'}"] = {
                "median": med(paired), "min": min(paired), "max": max(paired)}
    return {"arms": arms, "ratios": ratios}


def print_report(ctx: Context, summary: dict[str, Any], info: dict[str, Any]) -> None:
    a = ctx.args
    print(f"\nbench_sft: model={a.model} task={' '.join(a.task)} targets={a.targets} batch={a.batch_size} "
          f"steps={a.steps} (+{a.warmup_steps} warm-up) repeats={a.repeats} precision={ctx.precision} "
          f"(requested {a.precision}) threads={a.threads} max_length={ctx.cfg.task.max_length}")
    print(info["cpu"])
    print("versions: " + " ".join(f"{k} {v}" for k, v in info["versions"].items()))
    arms = summary["arms"]
    same = arms["trl"]["tokens"] == arms["harness"]["tokens"] and \
        arms["trl"]["completion_tokens"] == arms["harness"]["completion_tokens"]
    print(f"timed tokens per run (non-pad / completion): harness and plain {arms['harness']['tokens']:,} / "
          f"{arms['harness']['completion_tokens']:,}; trl {arms['trl']['tokens']:,} / {arms['trl']['completion_tokens']:,}"
          f" ({'the same' if same else 'TRL tokenises prompt+completion differently'}); trainable "
          f"{arms['harness']['trainable']:,} parameters in every arm")
    head = f"{'arm':<8} {'ms/step':>9} {'tokens/s':>9} {'cpu ms/step':>12} {'cpu tokens/s':>13}"
    print(head + "\n" + "-" * len(head))
    for arm in ARMS:
        r = arms[arm]
        print(f"{arm:<8} {r['ms_per_step']:>9,.0f} {r['tokens_per_s']:>9,.0f} {r['cpu_ms_per_step']:>12,.0f} "
              f"{r['cpu_tokens_per_s']:>13,.0f}")
    ratios = summary["ratios"]
    for ref, label, target in (("trl", "TRL", 1.0), ("plain", "plain", 0.97)):
        w, c = ratios[f"{ref}_wall"], ratios[f"{ref}_cpu"]
        print(f"harness/{label} = {w['median']:.3f}x tokens/s [{w['min']:.3f}-{w['max']:.3f}] wall, "
              f"{c['median']:.3f}x [{c['min']:.3f}-{c['max']:.3f}] by CPU time (target >= {target:.2f})")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    try:
        import trl  # noqa: F401
    except ImportError:
        raise SystemExit("bench_sft.py times TRL's SFTTrainer, but trl is not installed here; install the "
                         "benchmark extra (pip install -e '.[bench]') and run it again.") from None
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the weight-loading report, every run
    warnings.filterwarnings("ignore", category=FutureWarning)  # deprecations inside transformers and TRL
    torch.set_num_threads(args.threads)
    ctx = Context(args)
    info = {"cpu": cpu_line(), "versions": versions()}
    print(f"{len(ctx.items):,} training examples; {args.repeats} repeats of {', '.join(ARMS)} (order alternates), "
          f"{args.warmup_steps} + {args.steps} steps each", flush=True)
    runs = []
    for repeat in range(args.repeats):
        rep = {}
        for arm in ARMS if repeat % 2 == 0 else ARMS[::-1]:
            rep[arm] = run_arm(ctx, arm)
            print(f"  repeat {repeat + 1} {arm:<8} {rep[arm]['seconds']:7.2f} s ({rep[arm]['cpu_s']:.2f} s CPU)",
                  flush=True)
        if len({rep[arm]["trainable"] for arm in ARMS}) != 1:
            raise RuntimeError(f"the arms train different parameter counts: "
                               f"{ {arm: rep[arm]['trainable'] for arm in ARMS} }")
        runs.append(rep)
    summary = summarize(runs, args.steps)
    print_report(ctx, summary, info)
    out = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
           "precision": ctx.precision, "max_length": ctx.cfg.task.max_length, **info, "summary": summary, "runs": runs}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
