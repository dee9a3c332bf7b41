"""Plots of a training run: loss and accuracy curves per epoch, and a confusion matrix.

Figures are drawn with matplotlib's object API on the Agg canvas, so nothing needs
a display and no global pyplot state is touched.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    for ax in fig.axes[:1]:
        if ax.get_xlabel() == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def plot_curves(history: list[dict], out_dir: Path) -> list[Path]:
    """Write loss.png (train and val loss) and accuracy.png (train top-1, val top-1 and val top-k) into ``out_dir``."""
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.add_subplot()
    ax.plot(epochs, [h["train"]["loss"] for h in history], "o-", label="train")
    ax.plot(epochs, [h["val"]["loss"] for h in history], "s-", label="validation")
    ax.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    ax.grid(alpha=0.3)
    ax.legend()
    loss = _save(fig, out_dir / "loss.png")

    k = history[0]["val"]["k"]
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.add_subplot()
    ax.plot(epochs, [h["train"]["accuracy"] for h in history], "o-", label="train top-1")
    ax.plot(epochs, [h["val"]["accuracy"] for h in history], "s-", label="validation top-1")
    ax.plot(epochs, [h["val"]["topk_accuracy"] for h in history], "^--", label=f"validation top-{k}")
    ax.set(xlabel="epoch", ylabel="accuracy", title="Accuracy", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return [loss, _save(fig, out_dir / "accuracy.png")]


def plot_confusion(matrix: list[list[int]], classes: list[str], path: Path, title: str) -> Path:
    """Write a confusion matrix (rows: true class, columns: predicted class) with the counts in the cells."""
    n = len(classes)
    size = min(4 + 0.5 * n, 16)
    fig = Figure(figsize=(size, size * 0.85))
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticklabels(classes)
    if n <= 30:
        peak = max(max(row) for row in matrix) or 1
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                ax.text(j, i, str(count), ha="center", va="center", color="white" if count > peak / 2 else "black")
    return _save(fig, path)
