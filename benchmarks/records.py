"""Records of benchmark runs: one JSON object per line of ``records.jsonl``, one file per
experiment folder.

A record is one run: ``run``, its name, unique in the folder (a rerun replaces the record
of its name, as it overwrote the run's file before), ``script``, what wrote it, the fields
that script identifies a run by (row or variant, training, ``seed``), its configuration,
the machine where the script records one, and its results. Values are written as
Python's ``json`` writes them (floats to the last bit; NaN as ``NaN``). A record without
a ``run`` name (as those of ``contention-2026-12-04``) is read as well, and appended
without replacing any.

A run of ``sj-spatial train`` becomes a record too (:func:`job_record`): its
``summary.json``, and the per-epoch lines and the start of its log.

    python benchmarks/records.py show FOLDER [KEY=VALUE ...]   # a line per matching run
    python benchmarks/records.py add-job FOLDER LOGDIR [LOGDIR ...]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sj_spatial.train_job.loop import EpochRecord
from sj_spatial.train_job.report import epoch_line

try:
    import fcntl
except ImportError:  # not on Windows: appends there are not serialised between processes
    fcntl = None

#: The records file of an experiment folder.
RECORDS = "records.jsonl"
#: What ``script`` says for a run of ``sj-spatial train``.
JOB = "sj-spatial train"

Record = dict[str, Any]


class RecordError(ValueError):
    """A records file or a record that cannot be read or written; the message names the
    file and, for a file, the line."""


def records_file(folder: Path) -> Path:
    """The records file of ``folder``."""
    return Path(folder) / RECORDS


def _line(record: Mapping[str, Any], where: str) -> str:
    if not isinstance(record, Mapping):
        raise RecordError(f"{where}: a record must be a mapping, got {type(record).__name__}")
    if "run" in record and (not isinstance(record["run"], str) or not record["run"]):
        raise RecordError(
            f"{where}: a record's 'run' must be a non-empty str, got {record['run']!r}"
        )
    try:
        return json.dumps(dict(record), ensure_ascii=False) + "\n"
    except (TypeError, ValueError) as exc:
        name = f"run {record['run']!r}" if "run" in record else "a record"
        raise RecordError(f"{where}: {name} is not JSON: {exc}") from None


def _parse(path: Path, text: str) -> list[Record]:
    records, lines = [], {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RecordError(f"{path}:{number}: not JSON: {exc.msg}") from None
        if not isinstance(record, dict):
            raise RecordError(f"{path}:{number}: a record must be a JSON object")
        run = record.get("run")
        if "run" in record and (not isinstance(run, str) or not run):
            raise RecordError(f"{path}:{number}: 'run' must be a non-empty str, got {run!r}")
        if run in lines:
            raise RecordError(f"{path}:{number}: run {run!r} again (first on line {lines[run]})")
        if run is not None:
            lines[run] = number
        records.append(record)
    return records


_MISSING = object()


def read_records(folder: Path, **match: Any) -> list[Record]:
    """The records of ``folder`` in the file's order, only those whose fields equal every
    ``match`` value (e.g. ``read_records(out, row="gru", seed=0)``); none when the folder
    has no records file. Raises :class:`RecordError` naming the file and line of a line
    that is not a record."""
    path = records_file(folder)
    if not path.is_file():
        return []
    records = _parse(path, path.read_text(encoding="utf-8"))
    return [r for r in records if all(r.get(k, _MISSING) == v for k, v in match.items())]


def write_records(folder: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Write ``records`` as the whole records file of ``folder`` (their run names
    unique)."""
    path = records_file(folder)
    lines = [_line(r, str(path)) for r in records]
    _parse(path, "".join(lines))  # the run names are unique
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines), encoding="utf-8")


def append_record(folder: Path, record: Mapping[str, Any]) -> None:
    """Add ``record`` to the records of ``folder`` (created if missing), replacing the
    record of the same ``run`` (a record without one replaces none). Processes that append
    to one folder at a time wait for each other (a file lock), so that two runs finishing
    together both land."""
    path = records_file(folder)
    line = _line(record, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as file:
        if fcntl is not None:
            fcntl.flock(file, fcntl.LOCK_EX)
        file.seek(0)
        old = file.read()
        records = _parse(path, old)
        kept = [r for r in records if "run" not in r or r["run"] != record.get("run")]
        if len(kept) == len(records):
            if old and not old.endswith("\n"):
                line = "\n" + line
            file.write(line)  # "a+": at the end
        else:
            file.seek(0)
            file.truncate()
            file.write("".join(_line(r, str(path)) for r in kept) + line)


# ----------------------------------------------------------- runs of sj-spatial train
#: One epoch's line of ``sj-spatial train``'s output.
EPOCH_LINE = re.compile(
    r"epoch (\d+): train loss (\S+) acc (\S+) \| test loss (\S+) acc (\S+) \((\d+) s\)"
)
_EPOCH_FIELDS = ("train_loss", "train_acc", "test_loss", "test_acc")


def parse_job_log(text: str) -> tuple[list[str], list[dict], list[str]]:
    """A log of ``sj-spatial train``: the lines before its first epoch line, the epochs
    (``epoch``, ``train_loss``, ``train_acc``, ``test_loss``, ``test_acc`` as printed,
    3 decimals, and ``seconds``) and the lines after the last."""
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if EPOCH_LINE.fullmatch(line)), len(lines))
    history = []
    end = first
    while end < len(lines) and (match := EPOCH_LINE.fullmatch(lines[end])):
        values = dict(zip(_EPOCH_FIELDS, map(float, match.groups()[1:5]), strict=True))
        history.append({"epoch": int(match[1]), **values, "seconds": int(match[6])})
        end += 1
    return lines[:first], history, lines[end:]


def epoch_lines(history: list[Mapping[str, Any]]) -> list[str]:
    """The epoch lines of ``sj-spatial train`` for a record's ``history``."""
    return [epoch_line(EpochRecord(**h)) for h in history]


def job_record(logdir: Path, log: Path | None = None) -> Record:
    """The record of a finished ``sj-spatial train`` run in ``logdir``: ``run`` (the
    folder's name), ``seed``, every field of its ``summary.json``, ``config`` (the
    options in its ``checkpoint.pt``, when there is one) and, from its log (``log``, by
    default ``logdir/train.log`` when there is one), ``history`` (the epoch lines) and
    ``log_head`` (the lines before them); without a log, ``history`` comes from the
    checkpoint."""
    logdir = Path(logdir)
    summary_path = logdir / "summary.json"
    if not summary_path.is_file():
        raise RecordError(f"{logdir}: no summary.json (not a finished run of sj-spatial train)")
    summary = json.loads(summary_path.read_text())
    saved = None
    if (logdir / "checkpoint.pt").is_file():
        from sj_spatial.train_job.checkpoints import load_checkpoint

        saved = load_checkpoint(logdir / "checkpoint.pt")
    named = re.search(r"seed(\d+)$", logdir.name)
    if saved is not None:
        seed = int(saved["args"]["seed"])
    else:
        seed = int(named[1]) if named else None
    record: Record = {"script": JOB, "run": logdir.name, "seed": seed, **summary}
    if saved is not None:
        record["config"] = dict(saved["args"])
    log = logdir / "train.log" if log is None else Path(log)
    if log.is_file():
        head, history, _ = parse_job_log(log.read_text())
        record["history"], record["log_head"] = history, head
    elif saved is not None:
        columns = [saved["history"][k] for k in _EPOCH_FIELDS]
        record["history"] = [
            {"epoch": i + 1, **dict(zip(_EPOCH_FIELDS, row, strict=True))}
            for i, row in enumerate(zip(*columns, strict=True))
        ]
    return record


# ---------------------------------------------------------------------- command line
def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("show", help="the matching records, one per line")
    show.add_argument("folder", type=Path)
    show.add_argument("match", nargs="*", help="KEY=VALUE (VALUE read as JSON, else a str)")
    add = commands.add_parser("add-job", help="add finished runs of sj-spatial train")
    add.add_argument("folder", type=Path, help="the experiment folder to add them to")
    add.add_argument("logdirs", type=Path, nargs="+")
    args = parser.parse_args(argv)
    try:
        if args.command == "show":
            pairs = [item.partition("=") for item in args.match]
            if any(not sep for _, sep, _ in pairs):
                parser.error("match: each must be KEY=VALUE")
            match = {key: _value(value) for key, _, value in pairs}
            for record in read_records(args.folder, **match):
                print(json.dumps(record, ensure_ascii=False))
        else:
            for logdir in args.logdirs:
                record = job_record(logdir)
                append_record(args.folder, record)
                print(f"{records_file(args.folder)}: {record['run']}")
    except RecordError as exc:
        sys.exit(f"records.py: {exc}")


if __name__ == "__main__":
    main()
