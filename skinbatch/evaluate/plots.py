"""PNG figures: ROC curves in the style of Esteva et al. 2017 Fig. 3, and confusion matrices.

Fig. 3 plots sensitivity against specificity (specificity on the x axis, 0 → 1), the algorithm as a
blue curve with its AUC in the legend; dermatologists appear there as points, which we have none of,
so the chosen operating thresholds are marked instead. Needs matplotlib (``pip install 'skinbatch[report]'``);
it is imported only here, with the non-interactive Agg backend.
"""

from __future__ import annotations

from pathlib import Path

from skinbatch.contract import ExitCode, SkinbatchError

from .compute import MulticlassResult, TaskResult


class PlotsUnavailable(SkinbatchError, RuntimeError):
    """matplotlib is not installed."""

    exit_code = ExitCode.ENVIRONMENT


def _pyplot():  # type: ignore[no-untyped-def]
    try:
        import matplotlib
    except ImportError:
        raise PlotsUnavailable(
            "plots need matplotlib: `pip install 'skinbatch[report]'` (or `pip install matplotlib`), "
            "or pass --no-plots") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def roc_figure(task: TaskResult, path: Path, untrained: bool = False) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.6), dpi=120)
    spec = [1 - x for x in task.fpr]
    label = f"Algorithm: AUC = {task.auc:.3f}"
    if task.auc_ci is not None:
        label += f"\n({100 * task.auc_ci.level:.0f}% CI {task.auc_ci.low:.3f}–{task.auc_ci.high:.3f})"
    ax.plot(spec, task.tpr, color="#1f5fbf", linewidth=2.2, label=label, drawstyle="default")
    ax.plot([0, 1], [1, 0], linestyle="--", color="#999999", linewidth=1, label="Chance")
    for point in task.operating_points:
        ax.plot(point.specificity, point.sensitivity, marker="o", markersize=7, color="#d62728", linestyle="none")
        ax.annotate(f"t={point.threshold:g}", (point.specificity, point.sensitivity), textcoords="offset points",
                    xytext=(6, -12), fontsize=8, color="#d62728")
    if task.operating_points:
        ax.plot([], [], marker="o", color="#d62728", linestyle="none", label="Operating threshold(s)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("Specificity")
    ax.set_ylabel("Sensitivity")
    ax.set_title(f"{task.title}\n{task.n_positive} + {task.n_negative} images", fontsize=10)
    ax.set_aspect("equal")
    ax.grid(True, color="#e5e5e5", linewidth=0.6)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.legend(loc="best", fontsize=7.5, frameon=True, framealpha=0.85)
    if untrained:
        fig.text(0.5, 0.005, "UNTRAINED demo model: random scores", ha="center", fontsize=7, color="#b00000")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def confusion_figure(result: MulticlassResult, path: Path) -> Path:
    import numpy as np

    plt = _pyplot()
    n = len(result.labels)
    size = 4.4 if n <= 3 else 7.5
    fig, ax = plt.subplots(figsize=(size, size), dpi=120)
    m = result.matrix.astype(float)
    rows = m.sum(axis=1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    short = [lab if len(lab) <= 28 else lab[:26] + "…" for lab in result.labels]
    ax.set_xticks(range(n), short, rotation=45 if n > 3 else 0, ha="right" if n > 3 else "center", fontsize=7)
    ax.set_yticks(range(n), short, fontsize=7)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    acc = "-" if result.accuracy is None else f"{100 * result.accuracy:.1f}%"
    ax.set_title(f"{result.name} confusion matrix\nn = {result.n}, accuracy {acc}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
