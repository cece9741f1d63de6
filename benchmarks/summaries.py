"""The summaries of every results folder, and the tables of RESULTS.md that copy them,
regenerated from the folders' records (``benchmarks/records.py``).

A folder's summaries follow from the script that wrote its records:

- ``yinyang.py``: ``summary.md`` and ``summary.json`` (as ``yinyang.py --summarize``,
  which also draws ``accuracy_vs_params.png``);
- ``spoken_digits_compare.py``: ``summary.md`` (as ``--summarize``), and each
  ``targets.md`` / ``targets-<job>.md`` the folder has (``spoken_digits_targets.py``);
- ``structure.py``: ``results.md`` (``structure.py --report-only`` writes it with
  ``results.json`` and the figures);
- ``sj-spatial train``: ``summary.md``, a line per run (:func:`job_summary`).

RESULTS.md marks each table copied from records between ``<!-- table: NAME -->`` and
``<!-- /table -->``, NAME one of :data:`TABLES`.

    python benchmarks/summaries.py --check   # exit status 1, naming each file or table that differs
    python benchmarks/summaries.py --write   # rewrite them from the records
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from collections.abc import Callable
from pathlib import Path

import spoken_digits_compare
import spoken_digits_targets
import structure
import yinyang
from records import JOB, RECORDS, Record, read_records

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RESULTS_MD = HERE / "RESULTS.md"


def _accuracy(value: float) -> str:
    return f"{value:.3f}"


def job_summary(records: list[Record]) -> str:
    """A table of runs of ``sj-spatial train``: a line per run with what its own
    ``summary.md`` shows, in the same number formats."""
    topology: list[str] = []
    for record in records:
        topology += [k for k in record.get("topology", {}) if k not in topology]
    resumed = any(record.get("resumed") for record in records)
    header = ["run", "data", "epochs", "test accuracy (last / best)"]
    header += ["parameters (of which positions; per-synapse delays would need)"]
    header += [f"topology: {k}" for k in topology] + (["resumed"] if resumed else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in records:
        cells = [
            r["run"],
            r["data"],
            str(r["epochs"]),
            f"{_accuracy(r['test_accuracy'])} / {_accuracy(r['best_test_accuracy'])}",
            f"{r['parameters']} ({r['position_parameters']}; "
            f"{r['delay_parameters_if_per_synapse']})",
        ]
        cells += [
            f"{r['topology'][k]:.4g}" if k in r.get("topology", {}) else "-" for k in topology
        ]
        if resumed:
            cells.append(
                "; ".join(
                    f"after epoch {x['after_epoch']}: "
                    + ", ".join(f"{n} {old} -> {new}" for n, (old, new) in x["changed"].items())
                    for x in r.get("resumed", [])
                )
                or "-"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _script(folder: Path, records: list[Record]) -> str | None:
    scripts = {record.get("script") for record in records}
    if len(scripts) > 1:
        raise ValueError(
            f"{folder / RECORDS}: records of several scripts: {sorted(map(str, scripts))}"
        )
    return scripts.pop() if scripts else None


def _targets_jobs(folder: Path) -> dict[str, str]:
    """The ``targets*.md`` files of ``folder`` and the job folder each judges."""
    jobs = {}
    for path in sorted(folder.glob("targets*.md")):
        candidates = {spoken_digits_targets.DEFAULT_JOB} | {
            str(p.parent.relative_to(folder)) for p in folder.glob(f"**/{RECORDS}")
        }
        match = [job for job in candidates if spoken_digits_targets.targets_file(job) == path.name]
        if len(match) != 1:
            raise ValueError(f"{path}: no single job folder it judges ({match or 'none'})")
        jobs[path.name] = match[0]
    return jobs


def folder_summaries(folder: Path) -> dict[str, str]:
    """The summary files of ``folder`` regenerated from its records, by file name (none
    for records of another script, e.g. ``contention-2026-12-04``'s)."""
    records = read_records(folder)
    script = _script(folder, records)
    if script == "yinyang.py":
        return yinyang.summary_files(folder)
    if script == "spoken_digits_compare.py":
        files = {"summary.md": spoken_digits_compare.summary_table(records)}
        for name, job in _targets_jobs(folder).items():
            files[name] = spoken_digits_targets.targets_table(folder, job=job)
        return files
    if script == "structure.py":
        return {"results.md": structure.markdown(structure.report(folder)) + "\n"}
    if script == JOB:
        return {"summary.md": job_summary(records)}
    return {}


def folders(root: Path = RESULTS) -> list[Path]:
    """Every folder under ``root`` with records."""
    return sorted(path.parent for path in root.glob(f"**/{RECORDS}"))


def summary_files(root: Path = RESULTS) -> dict[Path, str]:
    """Every summary file of the folders under ``root``, with the text its records give."""
    return {
        folder / name: text
        for folder in folders(root)
        for name, text in folder_summaries(folder).items()
    }


# ------------------------------------------------------------------ RESULTS.md tables
#: Yin-Yang rows as RESULTS.md names and orders them: (variant, D, readout bias) -> label.
YINYANG_LABELS = {
    ("spatial", 2, "uniform"): "spatial (learned positions)",
    ("spatial", 3, "uniform"): "spatial (learned positions)",
    ("spatial", 1, "uniform"): "spatial (learned positions)",
    ("spatial", 4, "uniform"): "spatial (learned positions)",
    ("fixed", 2, "uniform"): "fixed (random positions, frozen)",
    ("free", None, "uniform"): "free (one delay per synapse)",
    ("none", None, "zero"): "none, readout bias 0",
    ("none", None, "uniform"): "none (shared settings)",
}


def _seeds(seeds: list[int]) -> str:
    consecutive = seeds == list(range(seeds[0], seeds[0] + len(seeds)))
    return (
        f"{seeds[0]}-{seeds[-1]}" if consecutive and len(seeds) > 2 else ",".join(map(str, seeds))
    )


def yinyang_table(folder: Path) -> str:
    """The Yin-Yang table of RESULTS.md: the rows of ``yinyang.summarize`` named in
    :data:`YINYANG_LABELS`, in its order, with the columns that compare with SpSNN."""
    rows = {
        (r["variant"], r["dim"], r["readout_bias"]): r
        for r in yinyang.summarize(read_records(folder))
        if r["readout"] == "max"
    }

    def interval(ci) -> str:
        return "-" if ci is None else f"{ci[0]:.2f}-{ci[1]:.2f}"

    lines = [
        "| variant | D | hidden | params | seeds | mean ± std (%) | 95 % CI of mean | median | "
        "95 % CI of median | min / max | SpSNN median | median CI vs SpSNN |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, label in YINYANG_LABELS.items():
        if key not in rows:
            continue
        r = rows[key]
        spsnn = "-" if r["spsnn_median"] is None else f"{r['spsnn_median']:g}"
        lines.append(
            f"| {label} | {r['dim'] or '-'} | {r['hidden']} | {r['params']} | "
            f"{_seeds(r['seeds'])} | {r['mean']:.2f} ± {r['std']:.2f} | "
            f"{interval(r['mean_ci95'])} | {r['median']:.2f} | {interval(r['median_ci95'])} | "
            f"{r['min']:.2f} / {r['max']:.2f} | {spsnn} | {r['vs_spsnn']} |"
        )
    return "\n".join(lines) + "\n"


def _spoken_digits(epochs: Callable[[str], bool]) -> str:
    folder = RESULTS / "spoken-digits-2026-12-02"
    records = [r for r in read_records(folder) if epochs(r["training"])]
    return spoken_digits_compare.summary_table(records)


@functools.cache
def _speech_structure() -> dict:
    """The report of the spoken-digit structure runs, once per process for its four tables
    (records do not change while the summaries are checked or written)."""
    return structure.report(RESULTS / "structure-2026-12-04-speech")


#: The configurations whose pruning curves RESULTS.md shows for the spoken digits.
_SPEECH_PRUNED = ("spatial-d2", "dist-1e-03", "dist-3e-03", "l1-1e-03")

#: The tables RESULTS.md copies, by the name its markers give.
TABLES: dict[str, Callable[[], str]] = {
    "yinyang-2026-12-01 summary": lambda: yinyang_table(RESULTS / "yinyang-2026-12-01"),
    "spoken-digits-2026-12-02 targets": lambda: spoken_digits_targets.targets_table(
        RESULTS / "spoken-digits-2026-12-02"
    ),
    "spoken-digits-2026-12-04-split2 targets": lambda: spoken_digits_targets.targets_table(
        RESULTS / "spoken-digits-2026-12-04-split2"
    ),
    "spoken-digits-2026-12-02 summary without the 60-epoch rows": lambda: _spoken_digits(
        lambda training: " 60 epochs" not in training
    ),
    "structure-2026-12-04-speech sweep": lambda: structure.sweep_table(_speech_structure()),
    "structure-2026-12-04-speech matched": lambda: structure.matched_table(_speech_structure()),
    "structure-2026-12-04-speech pruning": lambda: structure.pruning_table(
        _speech_structure(), _SPEECH_PRUNED
    ),
    "structure-2026-12-04-speech specialisation": lambda: structure.specialisation_table(
        _speech_structure()
    ),
}
_OPEN = re.compile(r"<!-- table: (.+) -->")
_CLOSE = "<!-- /table -->"


def marked_tables(text: str, path: Path = RESULTS_MD) -> list[tuple[str, int, int]]:
    """The marked tables of ``text``: (name, first line, end line) of each table's lines
    between its markers (0-based, end exclusive). Raises ValueError naming the line of a
    marker without its pair or of an unknown name."""
    lines = text.splitlines()
    tables, opened = [], None
    for number, line in enumerate(lines):
        start = _OPEN.fullmatch(line.strip())
        if start:
            if opened is not None:
                raise ValueError(f"{path}:{opened[1]}: table {opened[0]!r} is not closed")
            if start[1] not in TABLES:
                raise ValueError(f"{path}:{number + 1}: unknown table {start[1]!r}")
            opened = (start[1], number + 1)
        elif line.strip() == _CLOSE:
            if opened is None:
                raise ValueError(f"{path}:{number + 1}: {_CLOSE} without its opening marker")
            tables.append((opened[0], opened[1], number))
            opened = None
    if opened is not None:
        raise ValueError(f"{path}:{opened[1]}: table {opened[0]!r} is not closed")
    return tables


def table_lines(name: str) -> list[str]:
    """The lines between the markers of table ``name``: the table, a blank line each side."""
    return ["", *TABLES[name]().splitlines(), ""]


def results_md(text: str, path: Path = RESULTS_MD) -> str:
    """``text`` with every marked table regenerated."""
    lines = text.splitlines(keepends=True)
    for name, first, end in reversed(marked_tables(text, path)):
        lines[first:end] = [line + "\n" for line in table_lines(name)]
    return "".join(lines)


# ------------------------------------------------------------------------ check, write
def differences(root: Path = RESULTS, results: Path = RESULTS_MD) -> list[str]:
    """Each summary file under ``root`` and each table of ``results`` that differs from
    what the records give, in words; empty when all are equal."""
    found = []
    for path, text in summary_files(root).items():
        if not path.is_file():
            found.append(f"{path}: missing")
        elif path.read_text() != text:
            found.append(f"{path}: differs from its records")
    text = results.read_text()
    lines = text.splitlines()
    for name, first, end in marked_tables(text, results):
        if lines[first:end] != table_lines(name):
            found.append(f"{results}:{first}: table {name!r} differs from its records")
    return found


def write(root: Path = RESULTS, results: Path = RESULTS_MD) -> list[Path]:
    """Rewrite every summary file under ``root`` and every marked table of ``results``
    that differs; returns the files rewritten."""
    written = []
    for path, text in summary_files(root).items():
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            written.append(path)
    text = results.read_text()
    new = results_md(text, results)
    if new != text:
        results.write_text(new)
        written.append(results)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="report what differs (exit 1)")
    mode.add_argument("--write", action="store_true", help="rewrite what differs")
    args = parser.parse_args(argv)
    if args.check:
        found = differences()
        for line in found:
            print(line)
        if not found:
            print(
                f"every summary under {RESULTS} and every marked table of RESULTS.md is up to date"
            )
        return 1 if found else 0
    for path in write():
        print(f"rewrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
