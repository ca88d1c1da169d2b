"""Classification metrics from predictions; names have no spaces and no sentinels."""

import torch


def classification_metrics(predictions: torch.Tensor, labels: torch.Tensor, num_labels: int) -> dict[str, float]:
    """accuracy and macro-F1 (classes absent from both predictions and labels are skipped)."""
    predictions, labels = predictions.cpu(), labels.cpu()
    f1s = []
    for c in range(num_labels):
        tp = int(((predictions == c) & (labels == c)).sum())
        predicted, actual = int((predictions == c).sum()), int((labels == c).sum())
        if predicted + actual:
            f1s.append(2 * tp / (predicted + actual))
    return {
        "accuracy": float((predictions == labels).float().mean()),
        "macro_f1": sum(f1s) / len(f1s),
    }
