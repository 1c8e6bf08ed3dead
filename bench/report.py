"""Results of bench/worker_throughput.py (and bench/ssh_throughput.py): one measurement, medians,
the printed table, the goals, the PNG and the JSON report."""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from support.reports import write_report

GOAL_VS_RAW = 0.5
GOAL_CPU_VS_RAW = 2.0  # the worker's CPU seconds per message against (a)'s
GOAL_VS_SEED = 10.0
GOAL_VS_CELERY = 10.0
GOAL_RSS_MB = 60.0
GOAL_TLS_VS_PLAIN = 0.85  # (b-tls) over AMQPS against (b) over plain AMQP, same broker, same run


@dataclass
class Result:
    key: str
    label: str
    messages: int
    seconds: float = float("nan")
    startup: float = float("nan")
    rss_mb: float = float("nan")
    cpu: float = float("nan")
    done: int = 0
    note: str = ""
    median_rate: float | None = None  # set on the median of several runs

    @property
    def ok(self) -> bool:
        return self.done == self.messages

    @property
    def rate(self) -> float:
        if self.median_rate is not None:
            return self.median_rate
        return self.messages / self.seconds if self.ok and self.seconds > 0 else float("nan")


def median_result(runs: list[Result]) -> Result:
    first = runs[0]
    good = [r for r in runs if r.ok] or runs
    med = Result(first.key, first.label, first.messages)
    med.seconds = statistics.median(r.seconds for r in good)
    med.startup = statistics.median(r.startup for r in good)
    med.rss_mb = statistics.median(r.rss_mb for r in runs)
    med.cpu = statistics.median(r.cpu for r in runs)
    med.done = first.messages if any(r.ok for r in runs) else first.done
    rates = [r.rate for r in good if r.ok]
    med.median_rate = statistics.median(rates) if rates else float("nan")
    return med


def table_lines(results: dict[str, Result]) -> list[str]:
    header = (
        f"{'consumer':<40} {'messages':>8} {'seconds':>8} {'msgs/s':>9} {'peak RSS MB':>11} "
        f"{'startup s':>9} {'CPU s':>6}"
    )
    lines = [header, "-" * len(header)]
    for r in results.values():
        lines.append(
            f"{r.label:<40} {r.messages:>8} {r.seconds:>8.2f} {r.rate:>9.1f} {r.rss_mb:>11.1f} "
            f"{r.startup:>9.2f} {r.cpu:>6.2f}{'  ' + r.note if r.note else ''}"
        )
    return lines


def print_table(results: dict[str, Result], title: str) -> None:
    print(f"\n{title}")
    for line in table_lines(results):
        print(line)


def goals(results: dict[str, Result]) -> list[tuple[str, float, str, bool | None]]:
    """(name, value, goal, met): the worker (b) against each reference present, and its memory.

    b/a0 has no goal (met is None): it is the ratio against the per-message consumer that earlier
    figures called (a), kept so that old and new tables can be compared.
    """
    rows: list[tuple[str, float, str, bool | None]] = []
    b = results.get("worker")
    if b is None:
        return rows
    rb = b.rate
    for key, name, goal in (
        ("raw", "b/a", GOAL_VS_RAW),
        ("seed", "b/c", GOAL_VS_SEED),
        ("celery", "b/d", GOAL_VS_CELERY),
    ):
        if key in results:
            ratio = rb / results[key].rate
            rows.append((name, ratio, f">= {goal:g}", ratio >= goal))
            if key == "raw":  # and the CPU seconds per message against (a)'s
                a = results[key]
                cpu = (b.cpu / b.messages) / (a.cpu / a.messages)
                rows.append(("CPU/msg b/a", cpu, f"<= {GOAL_CPU_VS_RAW:g}", cpu <= GOAL_CPU_VS_RAW))
    if "raw-each" in results:
        rows.append(("b/a0", rb / results["raw-each"].rate, "-", None))
    if "worker-base" in results:
        rows.append(("b/b0", rb / results["worker-base"].rate, "-", None))
    if "worker-tls" in results:
        ratio = results["worker-tls"].rate / rb
        rows.append(("b-tls/b (AMQPS)", ratio, f">= {GOAL_TLS_VS_PLAIN:g}", ratio >= GOAL_TLS_VS_PLAIN))
    rows.append(("worker peak RSS MB", b.rss_mb, f"<= {GOAL_RSS_MB:g}", b.rss_mb <= GOAL_RSS_MB))
    return rows


GoalRow = tuple[str, float, str, bool | None]


def print_goals(results: dict[str, Result], rows: list[GoalRow] | None = None) -> None:
    """The goal rows (by default those of the worker throughput bench), one line each."""
    print()
    for name, value, goal, met in goals(results) if rows is None else rows:
        verdict = "no goal" if met is None else "met" if met else "NOT MET"
        print(f"{name:<20} {value:>8.2f}   goal {goal:<7} {verdict}")


def write_json(
    path: Path, runs: list[dict[str, Result]], final: dict[str, Result], rows: list[GoalRow] | None = None
) -> None:
    write_report(
        path,
        {
            "runs": [{k: vars(v) | {"rate": v.rate} for k, v in r.items()} for r in runs],
            "goals": [
                {"name": g[0], "value": g[1], "goal": g[2], "met": g[3]}
                for g in (goals(final) if rows is None else rows)
            ],
        },
    )


def plot(
    results: dict[str, Result],
    path: Path,
    subtitle: str,
    *,
    rows: list[GoalRow] | None = None,
    title: str = "account worker vs reference consumers",
    highlight: tuple[str, ...] = ("worker",),
    rss_goal: float | None = GOAL_RSS_MB,
    unit: str = "messages",
) -> None:
    """Throughput (log scale) and peak RSS bars; the ratio goals in a box; `highlight` keys in blue."""
    import matplotlib  # noqa: PLC0415 - only when plotting; the backend must be set before pyplot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    labels = [r.label.split(" ", 1)[0] + "\n" + r.key.replace("@", "\n@") for r in results.values()]
    rates = [r.rate for r in results.values()]
    rss = [r.rss_mb for r in results.values()]
    colors = ["#1f77b4" if r.key in highlight else "#999999" for r in results.values()]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
    bars = ax1.bar(labels, rates, color=colors)
    ax1.set_yscale("log")
    ax1.set_ylabel(f"{unit} / s (log)")
    ax1.set_title("throughput")
    ax1.bar_label(bars, labels=[f"{v:,.0f}" for v in rates], fontsize=8)
    text = "\n".join(
        f"{name} = {value:.2f}" + ("" if met is None else f"  (goal {goal}: {'met' if met else 'NOT met'})")
        for name, value, goal, met in (goals(results) if rows is None else rows)
        if "/" in name or rows is not None
    )
    if text and rows is not None:  # room above the bars for the goal box
        ax1.set_ylim(top=max((v for v in rates if not math.isnan(v)), default=1.0) * 8)
    if text:
        ax1.text(
            0.98,
            0.97,
            text,
            transform=ax1.transAxes,
            ha="right",
            va="top",
            fontsize=7,
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85},
        )
    bars = ax2.bar(labels, rss, color=colors)
    if rss_goal is not None:
        ax2.axhline(rss_goal, color="red", linestyle="--", linewidth=1, label=f"worker goal {rss_goal:g} MB")
        ax2.legend(fontsize=8)
    ax2.set_ylabel("peak RSS MB (VmHWM)")
    ax2.set_title("memory")
    ax2.bar_label(bars, labels=[f"{v:.0f}" for v in rss], fontsize=8)
    fig.suptitle(f"{title}  ({subtitle})", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


class Repeatable(Protocol):
    def run_once(self, rep: int) -> dict[str, Result]: ...

    def cleanup(self) -> None: ...


def run_and_report(
    bench: Repeatable,
    args: argparse.Namespace,
    started: float,
    *,
    subtitle: str,
    median_note: str = "",
    goal_rows: Callable[[dict[str, Result]], list[GoalRow]] | None = None,
    footer: str = "",
    plot_options: Mapping[str, Any] | None = None,
) -> int:
    """The benchmarks' shared run loop and report: `args.repeat` runs (cleanup whatever happens), each run's
    table, their median, the goals (`goal_rows`, else the worker throughput bench's), the PNG and the JSON.
    Exit status 0 only when every consumer of every run handled all its messages."""
    runs: list[dict[str, Result]] = []
    try:
        for rep in range(args.repeat):
            runs.append(bench.run_once(rep))
    finally:
        bench.cleanup()

    for i, res in enumerate(runs):
        print_table(res, f"run {i + 1}/{len(runs)}")
    final = runs[0]
    if len(runs) > 1:
        final = {key: median_result([r[key] for r in runs if key in r]) for key in runs[0]}
        print_table(final, f"median of {len(runs)} runs{median_note}")
    rows = goal_rows(final) if goal_rows else None
    print_goals(final, rows)
    print(
        f"\ntotal {time.monotonic() - started:.0f}s; {os.cpu_count()} CPUs; peak RSS = VmHWM "
        f"(Celery: main + pool children summed){footer}"
    )
    if args.png and str(args.png).strip() not in ("", "."):
        options = {"rows": rows, **(plot_options or {})}
        plot(final, args.png, f"{subtitle}, {len(runs)} run(s), {os.cpu_count()} CPUs", **options)
        print(f"plot: {args.png}")
    if args.json:
        write_json(args.json, runs, final, rows)
    return 0 if all(r.ok for run in runs for r in run.values()) else 1
