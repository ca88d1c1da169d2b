"""Each metric's direction and the task kinds it applies to, in one place: the run's best
step, the convergence flag and the task checks read it from here."""

# +1: higher is better (scores); -1: lower is better (losses).
DIRECTIONS: dict[str, int] = {
    "accuracy": 1,
    "macro_f1": 1,
    "token_accuracy": 1,
    "loss": -1,
    "perplexity": -1,
}
CLASSIFICATION_METRICS = ("accuracy", "macro_f1")  # what task.metric may name on head / label-word tasks
SFT_METRICS = ("loss", "token_accuracy")  # what task.metric may name on task.format=sft
# What a run records per split, by task kind (run/metrics.py, run/sft_eval.py).
RECORDED_CLASSIFICATION = ("accuracy", "macro_f1", "loss")
RECORDED_SFT = ("loss", "perplexity", "token_accuracy")


def higher_is_better(metric: str) -> bool:
    """The direction of a metric named plainly or as "<split>/<name>"; an unknown name is a
    KeyError, not a guess."""
    return DIRECTIONS[metric.rsplit("/", 1)[-1]] > 0


def default_metric(task_format: str) -> str:
    """task.metric when a task file leaves it to the format (conf/task/local.yaml)."""
    return "loss" if str(task_format) == "sft" else "accuracy"
