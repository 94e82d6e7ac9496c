"""Live per-round progress and the final table (rich)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console()


def _fmt(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@contextmanager
def round_progress(num_rounds: int, first: int = 1, enabled: bool = True):
    """Yield an ``on_round(line)`` callback that advances a progress bar."""
    if not enabled:
        yield None
        return
    progress = Progress(
        TextColumn("[bold]round"),
        MofNCompleteColumn(),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,  # the results table replaces it; an error line stands alone
    )
    task = progress.add_task("rounds", total=num_rounds, completed=first - 1, status="")

    def on_round(line: dict[str, Any]) -> None:
        val, test = line.get("validation") or {}, line.get("test") or {}
        status = (
            f"loss {_fmt(line.get('train', {}).get('train_loss'))}"
            f"  val acc {_fmt(val.get('accuracy'))}  test acc {_fmt(test.get('accuracy'))}"
            f"  {line['succeeded']}/{line['sampled']} ok"
        )
        progress.update(task, completed=line["round"], status=status)

    with progress:
        yield on_round


def results_table(lines: list[dict[str, Any]], title: str) -> Table:
    """Round, train loss, federated evaluation accuracy, central validation and test."""
    table = Table(title=title)
    for col in (
        "round",
        "clients ok",
        "train loss",
        "fed. eval acc",
        "val acc",
        "test loss",
        "test acc",
    ):
        table.add_column(col, justify="right")
    for m in lines:
        if m.get("round", 0) == 0:
            continue
        val, test = m.get("validation") or {}, m.get("test") or {}
        table.add_row(
            str(m["round"]),
            f"{m.get('succeeded', 0)}/{m.get('sampled', 0)}",
            _fmt(m.get("train", {}).get("train_loss")),
            _fmt(m.get("evaluate", {}).get("eval_acc")),
            _fmt(val.get("accuracy")),
            _fmt(test.get("loss")),
            _fmt(test.get("accuracy")),
        )
    return table
