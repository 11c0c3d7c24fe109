"""Plot data for ``dvc plots`` (CSV, columns as dvc.yaml's top-level ``plots:`` expects) and PNGs.

equity.csv ``timestamp,equity`` · drawdown.csv ``timestamp,drawdown`` · confusion.csv
``actual,predicted`` (one row per test sample) · importance.csv ``feature,importance``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from autotrader.modeling import CLASSES
from autotrader.modeling import metrics as m

NAMES = {-1: "short", 0: "flat", 1: "long"}


def plot_frames(
    portfolio_bars: pd.Series, actual: np.ndarray, predicted: np.ndarray, importance: pd.DataFrame
) -> dict[str, pd.DataFrame]:
    stamps = pd.DatetimeIndex(portfolio_bars.index).strftime("%Y-%m-%dT%H:%M:%SZ")
    returns = portfolio_bars.to_numpy()
    return {
        "equity": pd.DataFrame({"timestamp": stamps, "equity": m.equity_curve(returns)}),
        "drawdown": pd.DataFrame({"timestamp": stamps, "drawdown": m.drawdown(returns)}),
        "confusion": pd.DataFrame(
            {"actual": np.asarray(actual, dtype="int64"), "predicted": np.asarray(predicted, dtype="int64")}
        ),
        "importance": importance.loc[:, ["feature", "importance"]],
    }


def write_all(folder: Path, frames: dict[str, pd.DataFrame]) -> None:
    """CSV and PNG of every plot into ``folder`` (the caller makes it atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        frame.to_csv(folder / f"{name}.csv", index=False, float_format="%.10g")

    for name, column, title in (
        ("equity", "equity", "Equity (portfolio, net)"),
        ("drawdown", "drawdown", "Drawdown"),
    ):
        frame = frames[name]
        fig, ax = plt.subplots(figsize=(9, 3.5))
        ax.plot(pd.to_datetime(frame["timestamp"]), frame[column], lw=1)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        fig.autofmt_xdate()
        fig.tight_layout()
        fig.savefig(folder / f"{name}.png", dpi=100)
        plt.close(fig)

    conf = frames["confusion"]
    matrix = np.zeros((len(CLASSES), len(CLASSES)), dtype=int)
    for i, actual in enumerate(CLASSES):
        for j, predicted in enumerate(CLASSES):
            matrix[i, j] = int(((conf["actual"] == actual) & (conf["predicted"] == predicted)).sum())
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(matrix, cmap="Blues")
    labels = [NAMES[c] for c in CLASSES]
    ax.set_xticks(range(3), labels)
    ax.set_yticks(range(3), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    for i in range(3):
        for j in range(3):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center")
    ax.set_title("Confusion (test)")
    fig.tight_layout()
    fig.savefig(folder / "confusion.png", dpi=100)
    plt.close(fig)

    imp = frames["importance"].sort_values("importance")
    fig, ax = plt.subplots(figsize=(6, max(3, 0.25 * len(imp))))
    ax.barh(imp["feature"], imp["importance"])
    ax.set_title("Permutation importance (test, sampled)")
    fig.tight_layout()
    fig.savefig(folder / "importance.png", dpi=100)
    plt.close(fig)
