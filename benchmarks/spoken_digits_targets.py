"""Spoken digits: the two accuracy targets, with the interval of each difference.

Reads the records of the 60-epoch runs of one results folder (``benchmarks/records.py``)
and writes ``targets.md`` there:

- learned 2-D positions: the runs of ``sj-spatial train --data-root DIR`` with its defaults,
  recorded in ``default-recipe/records.jsonl`` as runs ``seed<N>`` (``python
  benchmarks/records.py add-job RESULTS/default-recipe LOGDIR``; the comparison's
  ``rec-d2`` row is the same training, bit for bit:
  ``tests/benchmarks/test_spoken_digits_compare.py``); ``--job NAME`` reads the runs
  ``seed<N>`` recorded in ``NAME/`` instead (runs of the job with other options) and writes
  ``targets-NAME.md`` (a ``/`` in NAME as ``-``);
- the GRU and the same recurrent model without delays: ``spoken_digits_compare.py``'s
  records in the folder itself, ``--model gru --lr 0.003`` and ``--model rec-none --lr
  0.01``, each with ``--epochs 60``.

The targets, each judged on Welch's t interval of the difference of two means (unequal
variances, 95 %): learned positions within ``--gap`` (3) points of the GRU, and clearly
above the model without delays. A target is ``met`` when the whole interval is on its
side, ``met on the means only`` when just the difference of the means is.

    python benchmarks/spoken_digits_targets.py benchmarks/results/spoken-digits-2026-12-02
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
from pathlib import Path

from records import read_records
from yinyang import mean_interval

EPOCHS = 60
GRU = ("gru", f"lr 0.003, augmented, {EPOCHS} epochs")
NO_DELAYS = ("rec-none", f"lr 0.01, augmented, {EPOCHS} epochs")


def difference_interval(
    a: list[float], b: list[float], level: float = 0.95
) -> tuple[float, float] | None:
    """Welch's t interval of ``mean(a) - mean(b)`` (None unless both have two values)."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy import stats

    diff = statistics.fmean(a) - statistics.fmean(b)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return diff, diff
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = stats.t.ppf((1 + level) / 2, df) * math.sqrt(va + vb)
    return float(diff - half), float(diff + half)


def compare_runs(results: Path, row: tuple[str, str]) -> dict[int, float]:
    """Test accuracy (%) after the last epoch, by seed, of one comparison row."""
    records = read_records(results, row=row[0], training=row[1])
    return {r["seed"]: 100 * r["test_acc"] for r in sorted(records, key=lambda r: r["seed"])}


#: The folder of the runs of ``sj-spatial train --data-root`` with its defaults.
DEFAULT_JOB = "default-recipe"


def job_runs(results: Path, job: str = DEFAULT_JOB) -> dict[int, float]:
    """Test accuracy (%) after the last epoch, by seed, of the job's runs ``seed<N>``
    recorded in ``job``."""
    runs = {}
    for record in read_records(results / job, epochs=EPOCHS):
        match = re.fullmatch(r"seed(\d+)", record["run"])
        if match:
            runs[int(match[1])] = 100 * record["test_accuracy"]
    return dict(sorted(runs.items()))


def _interval(interval: tuple[float, float] | None, digits: int = 1) -> str:
    return f"{interval[0]:.{digits}f} to {interval[1]:.{digits}f}" if interval else "-"


def verdict(mean: float, interval: tuple[float, float] | None, bound: float) -> str:
    """Whether ``mean`` (and its interval) lies above ``bound``."""
    if interval is not None and interval[0] > bound:
        return "met"
    return "met on the means only" if mean > bound else "not met"


def targets_file(job: str = DEFAULT_JOB) -> str:
    """The name of the file that judges ``job``'s runs: ``targets.md`` for the defaults."""
    return "targets.md" if job == DEFAULT_JOB else f"targets-{job.strip('/').replace('/', '-')}.md"


def targets(results: Path, gap: float = 3.0, job: str = DEFAULT_JOB) -> str:
    """Write :func:`targets_file` for ``results``; returns its text."""
    text = targets_table(results, gap, job)
    (results / targets_file(job)).write_text(text)
    return text


def targets_table(results: Path, gap: float = 3.0, job: str = DEFAULT_JOB) -> str:
    """The two tables of :func:`targets_file` from the records of ``results``."""
    label = "the defaults" if job == DEFAULT_JOB else f"{job}/"
    rows = {
        "GRU 128, non-spiking": compare_runs(results, GRU),
        f"recurrent LIF 128, learned 2-D positions ({label})": job_runs(results, job),
        "recurrent LIF 128, no delays": compare_runs(results, NO_DELAYS),
    }
    lines = [
        f"| model ({EPOCHS} epochs) | seeds | test acc, last epoch (mean ± std) | "
        "95 % CI of the mean | per seed |",
        "|---|---|---|---|---|",
    ]
    for label, runs in rows.items():
        acc = [runs[s] for s in sorted(runs)]
        spread = f" ± {statistics.stdev(acc):.1f}" if len(acc) > 1 else ""
        mean = f"{statistics.fmean(acc):.1f}{spread}" if acc else "-"
        lines.append(
            f"| {label} | {len(acc)} ({', '.join(map(str, sorted(runs)))}) | {mean} | "
            f"{_interval(mean_interval(acc))} | {' / '.join(f'{a:.1f}' for a in acc)} |"
        )
    gru, positions, none = ([r[s] for s in sorted(r)] for r in rows.values())
    # two decimals for the differences, so that an end next to a bound shows its side
    lines += [
        "",
        "| target | difference of the means | Welch's 95 % interval | verdict |",
        "|---|---|---|---|",
    ]
    if gru and positions:
        # within `gap` of the GRU: gap - (GRU - positions) above 0
        diff = statistics.fmean(gru) - statistics.fmean(positions)
        interval = difference_interval(gru, positions)
        margin = (gap - interval[1], gap - interval[0]) if interval else None
        lines.append(
            f"| positions within {gap:g} points of the GRU | GRU - positions = {diff:.1f} | "
            f"{_interval(interval, 2)} | {verdict(gap - diff, margin, 0.0)} |"
        )
    if positions and none:
        diff = statistics.fmean(positions) - statistics.fmean(none)
        interval = difference_interval(positions, none)
        lines.append(
            f"| positions clearly above no delays | positions - no delays = {diff:.1f} | "
            f"{_interval(interval, 2)} | {verdict(diff, interval, 0.0)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="folder of the runs")
    parser.add_argument("--gap", type=float, default=3.0, help="points allowed below the GRU")
    parser.add_argument(
        "--job",
        default=DEFAULT_JOB,
        help=f"folder of the learned-positions runs' records (default: {DEFAULT_JOB})",
    )
    args = parser.parse_args(argv)
    if not args.results.is_dir():
        parser.error(f"results: {args.results} is not a folder")
    if not (args.results / args.job).is_dir():
        parser.error(f"--job: {args.results / args.job} is not a folder")
    print(targets(args.results, args.gap, args.job), end="")


if __name__ == "__main__":
    main()
