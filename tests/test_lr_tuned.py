"""sweeps/lr_tuned.yaml end to end on a tiny model: tuned.csv picks, per target set, the
learning rate with the best mean validation metric in runs.csv."""

import pandas as pd
import pytest
from cli_helpers import run_cli
from test_train import write_reviews

SHRUNK = ["sweep=lr_tuned", "model=tiny_bert", "task=local", "task.path=reviews.csv",
          "task.text_column=review", "task.label_column=sentiment", "task.val_size=40",
          "task.test_size=60", "task.max_length=32", "train.max_steps=100", "train.batch_size=16",
          "train.eval_every=0", "train.threads=1",
          'hydra.sweeper.params.targets="qv,qkv_ffn"', 'hydra.sweeper.params.seed="0,1"']


@pytest.mark.slow
def test_lr_tuned_sweep_chooses_each_target_sets_lr_on_validation(tmp_path):
    write_reviews(tmp_path / "reviews.csv")  # learnable in a few steps: the lrs differ
    sweep_dir = tmp_path / "sweep"
    done = run_cli([*SHRUNK, f"hydra.sweep.dir={sweep_dir}"], tmp_path)
    assert done.returncode == 0, done.explain()
    runs = pd.read_csv(sweep_dir / "report" / "runs.csv")
    tuned = pd.read_csv(sweep_dir / "report" / "tuned.csv")
    done_runs = runs[runs["status"].eq("completed")].copy()
    assert len(done_runs) == 2 * 3 * 2, runs[["path", "status"]]
    done_runs["lr"] = done_runs["variant"].str.extract(r"train\.lr=([0-9.e-]+)")[0].astype(float)
    means = done_runs.groupby(["target_set", "lr"])["val/accuracy"].mean()
    for target_set, row in tuned.set_index("target_set").iterrows():
        best = means[target_set]
        # Ties on validation are possible on a tiny model: the choice must be one of the best.
        assert best[row["train.lr"]] == pytest.approx(best.max()), (target_set, best.to_dict(), row["train.lr"])
        assert row["val_mean"] == pytest.approx(best.max())
    assert set(tuned["target_set"]) == {"qv", "qkv_ffn"}
    assert means.max() > means.min() + 0.1, means  # some lrs learn, some do not: a real choice
