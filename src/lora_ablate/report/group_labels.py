"""Short group labels for the report's headings and figure titles.

An ad-hoc sweep's shared overrides (e.g. `train.max_steps=50 task.max_train=200`) become
part of every group's variant, and a title that spells them all out runs off the page.
The label shown keeps only the overrides that differ between groups; those every group
shares go to one footnote line. Where even the differing part is long, groups are
numbered ("group 1", …) and the footnote says what each number stands for. The CSV files
keep the full variant.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from lora_ablate.labels import parse_variant, variant_text

LABEL_LIMIT = 40  # characters of a variant shown in a title before groups are numbered


def group_title(key: Mapping[str, Any]) -> str:
    """A group's heading: model · task · budget [· layers] [· variant label]."""
    parts = [str(key.get("model", "")), str(key.get("task", ""))]
    if "budget" in key:
        scale = key.get("budget_scale")
        scale = f" ×{scale:g}" if isinstance(scale, (int, float)) and not pd.isna(scale) else ""
        parts.append(f"budget {key['budget']}{scale}")
    if key.get("layers") not in (None, "", "all") and not pd.isna(key.get("layers")):
        parts.append(f"layers {key['layers']}")
    if isinstance(key.get("variant"), str) and key["variant"]:
        parts.append(key["variant"])
    return " · ".join(p for p in parts if p)


@dataclass(frozen=True)
class GroupLabels:
    """Full variant text -> the label shown; what every group shares; number legend."""

    short: Mapping[str, str] = field(default_factory=dict)
    shared: str = ""  # overrides every group has, as variant text ("" for none)
    numbered: tuple[tuple[str, str], ...] = ()  # (label, the overrides it stands for)

    @classmethod
    def of(cls, variants: Iterable[str], limit: int = LABEL_LIMIT) -> "GroupLabels":
        """The labels of these variant texts (one per group, repeats allowed)."""
        texts = sorted({str(v) for v in variants if isinstance(v, str)})
        if not texts:
            return cls()
        parsed = {text: parse_variant(text) for text in texts}
        common = set.intersection(*(set(p.items()) for p in parsed.values()))
        rest = {text: variant_text({k: v for k, v in p.items() if (k, v) not in common})
                for text, p in parsed.items()}
        shared = variant_text(dict(common))
        if max(len(r) for r in rest.values()) <= limit:
            return cls(rest, shared)
        labels = {text: f"group {i}" for i, text in enumerate(texts, start=1)}
        return cls(labels, shared, tuple((labels[t], rest[t]) for t in texts))

    @classmethod
    def of_frame(cls, frame: pd.DataFrame, limit: int = LABEL_LIMIT) -> "GroupLabels":
        return cls.of(frame["variant"].dropna() if "variant" in frame else (), limit)

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        """A copy of `frame` whose variant column holds the short labels (for display)."""
        if "variant" not in frame or not self.short:
            return frame
        return frame.assign(variant=frame["variant"].map(self.label))

    def label(self, variant: str) -> str:
        """The label of `variant`; one these labels were not made from (e.g. a tuned row's
        variant without its tuned keys) loses the shared overrides only."""
        if variant in self.short or not isinstance(variant, str):
            return self.short.get(variant, variant)
        shared = set(parse_variant(self.shared).items())
        return variant_text({k: v for k, v in parse_variant(variant).items() if (k, v) not in shared})

    def footnote(self) -> str | None:
        """One line for under the headings: the shared overrides and the numbered groups."""
        parts = []
        if self.shared:
            parts.append("Overrides shared by every group (left out of the titles): "
                         + self.shared.replace(",", ", ") + ".")
        if self.numbered:
            parts.append("Groups: " + "; ".join(f"{label} = {text.replace(',', ', ') or 'none'}"
                                                 for label, text in self.numbered) + ".")
        return " ".join(parts) or None
