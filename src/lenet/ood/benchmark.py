"""How well each detector separates the test split from inputs unlike it: AUROC and FPR@95TPR.

In-distribution is the run's test split (positives: they should pass); the
out-of-distribution sets come from lenet.ood.probes. For each detector and set:

- AUROC: the chance that a random test image scores higher than a random OOD
  image (ties count half); 1.0 separates them perfectly, 0.5 is a coin;
- FPR95: the share of OOD images that pass the threshold which 95% of the
  test images pass (the threshold set on the test split itself, as the
  literature reports it);
- beside them, what the run's own calibrated threshold does: the share of
  test images it flags (should be near 1 - TPR), the share of each set it
  flags, and the share of the test images saved as files it flags (the same
  as the arrays: a file that looks like the data is taken as it is).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..base.tables import format_table
from .fitted import threshold_at
from .probes import IN_FILES, KINDS, ProbeSet


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values`, ties given their average rank."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2)[inverse]


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """P(in-distribution score > OOD score), ties half (the Mann-Whitney U statistic)."""
    n_in, n_out = len(in_scores), len(out_scores)
    ranks = _average_ranks(np.concatenate([in_scores, out_scores]))
    return float((ranks[:n_in].sum() - n_in * (n_in + 1) / 2) / (n_in * n_out))


def fpr_at_tpr(in_scores: np.ndarray, out_scores: np.ndarray, tpr: float = 0.95) -> float:
    """The share of OOD scores at or above the threshold that `tpr` of in-distribution pass."""
    return float(np.mean(out_scores >= threshold_at(in_scores, tpr)))


def roc_curve(in_scores: np.ndarray, out_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rates, true positive rates), thresholds from high to low."""
    thresholds = np.unique(np.concatenate([in_scores, out_scores]))[::-1]
    tpr = np.searchsorted(np.sort(-in_scores), -thresholds, side="right") / len(in_scores)
    fpr = np.searchsorted(np.sort(-out_scores), -thresholds, side="right") / len(out_scores)
    return np.concatenate([[0], fpr]), np.concatenate([[0], tpr])


@dataclass
class Benchmark:
    detectors: list[str]
    sets: list[ProbeSet]
    in_scores: dict[str, np.ndarray]  # detector -> (N_test,)
    out_scores: dict[str, dict[str, np.ndarray]]  # detector -> set name -> (N_set,)
    thresholds: dict[str, float]  # the run's calibrated ones
    tpr: float
    conditions: dict[str, Any] = field(default_factory=dict)

    def kind_scores(self, detector: str, kind: str) -> np.ndarray:
        return np.concatenate([self.out_scores[detector][s.name] for s in self.sets
                               if s.kind == kind] or [np.zeros(0)])

    def summary(self) -> list[dict[str, Any]]:
        """One row per detector: AUROC and FPR95 per kind (OOD sets of a kind pooled), and
        the calibrated threshold's flag rate on the test split."""
        rows = []
        for d in self.detectors:
            row: dict[str, Any] = {"detector": d}
            for kind in KINDS:
                out = self.kind_scores(d, kind)
                if len(out):
                    row[f"{kind}_auroc"] = auroc(self.in_scores[d], out)
                    row[f"{kind}_fpr95"] = fpr_at_tpr(self.in_scores[d], out, self.tpr)
                    row[f"{kind}_flagged"] = float(np.mean(out < self.thresholds[d]))
            row["worst_far_auroc"] = min(auroc(self.in_scores[d], self.out_scores[d][s.name])
                                         for s in self.sets if s.kind == "far")
            row["test_flagged"] = float(np.mean(self.in_scores[d] < self.thresholds[d]))
            as_files = self.out_scores[d].get(IN_FILES)
            if as_files is not None:
                row["test_files_flagged"] = float(np.mean(as_files < self.thresholds[d]))
                row["test_files_same_scores"] = int(np.sum(as_files == self.in_scores[d]))
            rows.append(row)
        return rows

    def per_set(self) -> list[dict[str, Any]]:
        rows = []
        for s in self.sets:
            row: dict[str, Any] = {"set": s.name, "kind": s.kind, "n": len(s.images)}
            for d in self.detectors:
                out = self.out_scores[d][s.name]
                row[d] = {"auroc": auroc(self.in_scores[d], out),
                          "fpr95": fpr_at_tpr(self.in_scores[d], out, self.tpr),
                          "flagged": float(np.mean(out < self.thresholds[d]))}
            rows.append(row)
        return rows

    def best(self) -> str:
        """The detector with the highest mean AUROC over the far and glyph kinds."""
        return max(self.summary(), key=lambda r: (r["far_auroc"] + r.get("glyphs_auroc", 0))
                   )["detector"]

    def to_dict(self) -> dict[str, Any]:
        return {"tpr": self.tpr, "conditions": self.conditions, "thresholds": self.thresholds,
                "summary": self.summary(), "per_set": self.per_set(), "best": self.best()}


def run(score: Callable[..., dict[str, np.ndarray]], test_images: np.ndarray,
        sets: list[ProbeSet], thresholds: dict[str, float], tpr: float,
        conditions: dict[str, Any] | None = None) -> Benchmark:
    """`score(images, originals)` gives {detector: (N,) scores}; it is called once per set
    (`originals`: the set's files' statistics, or None)."""
    in_scores = score(test_images, None)
    detectors = list(in_scores)
    out: dict[str, dict[str, np.ndarray]] = {d: {} for d in detectors}
    for s in sets:
        for d, values in score(s.images, s.originals).items():
            out[d][s.name] = values
    return Benchmark(detectors, sets, in_scores, out, thresholds, tpr, conditions or {})


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def format_markdown(b: Benchmark, default: str) -> str:
    """The summary table, then AUROC / FPR95 per set, as markdown."""
    kinds = [k for k in KINDS if any(s.kind == k for s in b.sets)]
    files = any(s.name == IN_FILES for s in b.sets)
    head = ["detector", *(f"{k} {m}" for k in kinds for m in ("AUROC", "FPR95")),
            *(["photos flagged"] if "photos" in kinds else []),
            "worst far set AUROC", f"test flagged (target {_pct(1 - b.tpr)})",
            *(["test as files flagged"] if files else [])]
    rows = []
    for r in b.summary():
        name = f"**{r['detector']}** (default)" if r["detector"] == default else r["detector"]
        cells = [name]
        for k in kinds:
            cells += [f"{r[f'{k}_auroc']:.4f}", _pct(r[f"{k}_fpr95"])]
        if "photos" in kinds:
            cells.append(_pct(r["photos_flagged"]))
        cells += [f"{r['worst_far_auroc']:.4f}", _pct(r["test_flagged"])]
        rows.append([*cells, *([_pct(r["test_files_flagged"])] if files else [])])
    per_set = [[r["set"], r["kind"], str(r["n"]),
                *(f"{r[d]['auroc']:.3f} / {_pct(r[d]['fpr95'])} / {_pct(r[d]['flagged'])}"
                  for d in b.detectors)]
               for r in b.per_set()]
    return "\n".join([format_table(head, rows, markdown=True), "",
                      "AUROC / FPR95 / flagged at the run's threshold, per set:", "",
                      format_table(["set", "kind", "n", *b.detectors], per_set,
                                   align="llr" + "r" * len(b.detectors), markdown=True)])


def plot_roc(b: Benchmark, path: str | Path, title: str) -> Path:
    """One ROC panel per kind of OOD set, one curve per detector."""
    kinds = [k for k in KINDS if any(s.kind == k for s in b.sets)]
    fig = Figure(figsize=(4.2 * len(kinds), 4.4), dpi=110)
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    for ax, kind in zip(axes, kinds, strict=True):
        for d in b.detectors:
            fpr, tpr = roc_curve(b.in_scores[d], b.kind_scores(d, kind))
            ax.plot(fpr, tpr, label=f"{d} ({auroc(b.in_scores[d], b.kind_scores(d, kind)):.3f})",
                    lw=1.2)
        ax.axhline(b.tpr, color="grey", ls=":", lw=0.8)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.5)
        ax.set_xlabel("OOD images passed (false positive rate)")
        ax.set_ylabel("test images passed (true positive rate)")
        names = ", ".join(s.name for s in b.sets if s.kind == kind)
        ax.set_title(f"{kind}", fontsize=10)
        ax.text(0.98, 0.02, "\n".join(_wrap(names, 42)), transform=ax.transAxes, ha="right",
                va="bottom", fontsize=5.5, color="dimgrey")
        ax.legend(loc="center right", fontsize=6.5, title="detector (AUROC)", title_fontsize=7)
        ax.set_xlim(-0.01, 1)
        ax.set_ylim(0, 1.01)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return [*lines, line]
