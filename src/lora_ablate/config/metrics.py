"""Each metric's direction and the task kinds it applies to, in one place: the run's best
step, the convergence flag and the task checks read it from here."""

# +1: higher is better (scores); -1: lower is better (losses).
DIRECTIONS: dict[str, int] = {
    "accuracy": 1,
    "macro_f1": 1,
    "token_accuracy": 1,
    "exact_match": 1,
    "loss": -1,
    "perplexity": -1,
}
CLASSIFICATION_METRICS = ("accuracy", "macro_f1")  # what task.metric may name on head / label-word tasks
SFT_METRICS = ("loss", "token_accuracy", "exact_match")  # what task.metric may name on task.format=sft
# Needs generation, which only tasks with a checkable answer make (task.max_new_tokens > 0).
GENERATED_METRICS = ("exact_match",)
# What a run records per split, by task kind (run/metrics.py, run/sft_eval.py).
RECORDED_CLASSIFICATION = ("accuracy", "macro_f1", "loss")
RECORDED_SFT = ("loss", "perplexity", "token_accuracy", "exact_match")  # exact_match: max_new_tokens > 0 only


def higher_is_better(metric: str) -> bool:
    """The direction of a metric named plainly or as "<split>/<name>"; an unknown name is a
    KeyError, not a guess."""
    return DIRECTIONS[metric.rsplit("/", 1)[-1]] > 0


def default_metric(task_format: str) -> str:
    """task.metric when a task file leaves it to the format (conf/task/local.yaml)."""
    return "loss" if str(task_format) == "sft" else "accuracy"


def curve_metric(metric: str) -> str:
    """The metric the validation curve holds for `metric`: greedy generation runs only at the
    final evaluation (it costs many forward passes per example), so a run whose task.metric is
    exact_match picks its best step and judges convergence on the validation loss."""
    return "loss" if metric in GENERATED_METRICS else metric
