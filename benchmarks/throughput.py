"""Throughput of parse_lead beside the stdlib email parser and mail-parser.

Run from the repository root::

    python benchmarks/throughput.py [--rounds 3] [--repeat 3] [--json]
    python benchmarks/throughput.py --profile [--top 25]

The inputs are every ``.eml`` under ``fixtures/`` and every email listed in
the ``MANIFEST.tsv`` files of the public email corpus at ``CORPUS``, a folder
beside the repository (skipped with a printed note when absent). Corpus files that are
bare bodies without a header block (the reply-parser sets) are wrapped in a
minimal text/plain message. Binary files without a header block (a NUL byte in
the first 8 KiB, such as an Outlook ``.msg``) are left out. Every parser gets
the same bytes.

Each parser runs in its own child interpreter so that peak resident set sizes
(``ru_maxrss``, which Linux keeps across fork and exec) do not mix. A child
imports its parser, reads every input into memory, records ``ru_maxrss`` as
the baseline, runs one warm-up pass that is not timed, then ``--repeat``
timed passes over all inputs. ``--rounds`` starts the children that many
times, interleaving the parsers, so that load from other processes on the
machine spreads over all of them. The figures are medians over all timed
passes. Logging is disabled in every child, because mail-parser logs a
warning for each part type it does not handle.

``--profile`` profiles parse_lead over the same inputs instead. It prints the
top functions under cProfile by own and by cumulative time, then the time per
pipeline stage and the slowest inputs by file name from a pass without the
profiler. Linux only, because ``ru_maxrss`` is read in KiB.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import csv
import io
import json
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "fixtures"
CORPUS = REPO.parent / "shared" / "corpus"
PARSERS = ("parse_lead", "mail-parser", "stdlib-compat32")
MB = 1_000_000
# A child that runs longer than this has hung or met a pathological input.
WORKER_TIMEOUT = 1800

_WRAP_HEADER = (
    b"From: sender@example.com\r\n"
    b"To: sales@example.net\r\n"
    b"Subject: wrapped body\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
)


def _has_header_block(raw: bytes) -> bool:
    from leadparse.api import _check_is_email
    from leadparse.errors import NotEmailError

    try:
        _check_is_email(raw)
    except NotEmailError:
        return False
    return True


def load_inputs() -> tuple[list[tuple[str, str, bytes]], dict[str, int]]:
    """Read the inputs as (group, relative name, bytes), with counts of changes."""
    counts = {"wrapped": 0, "binary_skipped": 0}
    inputs: list[tuple[str, str, bytes]] = []
    for path in sorted(FIXTURES.rglob("*.eml")):
        inputs.append(("fixtures", str(path.relative_to(REPO)), path.read_bytes()))
    if not CORPUS.is_dir():
        return inputs, counts
    for manifest in sorted(CORPUS.glob("*/MANIFEST.tsv")):
        with manifest.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        for row in rows:
            path = manifest.parent / row["file"]
            raw = path.read_bytes()
            name = str(path.relative_to(CORPUS))
            if not _has_header_block(raw):
                if b"\x00" in raw[:8192]:
                    counts["binary_skipped"] += 1
                    continue
                raw = _WRAP_HEADER + raw
                counts["wrapped"] += 1
            inputs.append(("corpus", name, raw))
    return inputs, counts


def _parser(name: str) -> Callable[[bytes], object]:
    if name == "parse_lead":
        from leadparse import parse_lead
        from leadparse.pipeline import Pipeline

        Pipeline.default()
        return parse_lead
    if name == "mail-parser":
        import mailparser

        return mailparser.parse_from_bytes  # type: ignore[no-any-return]
    if name == "stdlib-compat32":
        from email.parser import BytesParser
        from email.policy import compat32

        def parse(raw: bytes) -> object:
            return BytesParser(policy=compat32).parsebytes(raw)

        return parse
    raise SystemExit(f"unknown parser {name!r}; choose from {', '.join(PARSERS)}")


def _one_pass(
    parse: Callable[[bytes], object], inputs: list[tuple[str, str, bytes]]
) -> tuple[dict[str, float], float, float, dict[str, int]]:
    group_wall: dict[str, float] = {}
    failures: dict[str, int] = {}
    cpu_start = time.process_time()
    wall_start = time.perf_counter()
    for group, _name, raw in inputs:
        started = time.perf_counter()
        try:
            parse(raw)
        except Exception as exc:
            key = type(exc).__name__
            failures[key] = failures.get(key, 0) + 1
        group_wall[group] = group_wall.get(group, 0.0) + (time.perf_counter() - started)
    wall = time.perf_counter() - wall_start
    cpu = time.process_time() - cpu_start
    return group_wall, wall, cpu, failures


def run_worker(name: str, repeat: int) -> dict[str, Any]:
    """Time one parser in this process and return its figures."""
    import logging

    logging.disable(logging.CRITICAL)
    parse = _parser(name)
    inputs, _ = load_inputs()
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _, _, _, failures = _one_pass(parse, inputs)
    walls: list[float] = []
    cpus: list[float] = []
    groups: dict[str, list[float]] = {}
    for _ in range(repeat):
        group_wall, wall, cpu, _ = _one_pass(parse, inputs)
        walls.append(wall)
        cpus.append(cpu)
        for group, seconds in group_wall.items():
            groups.setdefault(group, []).append(seconds)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "parser": name,
        "wall_s": walls,
        "cpu_s": cpus,
        "group_wall_s": groups,
        "failures": failures,
        "baseline_rss_kib": baseline_kib,
        "peak_rss_kib": peak_kib,
    }


def _spawn(name: str, repeat: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", name, "--repeat", str(repeat)]
    done = subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=WORKER_TIMEOUT
    )
    if done.returncode != 0:
        raise SystemExit(
            f"worker for {name} failed with exit code {done.returncode}; "
            f"the end of its stderr follows:\n{done.stderr[-2000:]}"
        )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def machine() -> dict[str, Any]:
    """Describe the machine: CPU model, core count and Python version."""
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    changed = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "commit": f"{commit} with uncommitted changes in src/" if changed else commit,
        "cpu_model": model,
        "platform_processor": platform.processor(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def summarize(
    runs: dict[str, list[dict[str, Any]]], inputs: list[tuple[str, str, bytes]]
) -> dict[str, Any]:
    """Reduce the children's figures to medians, rates and ratios."""
    total_bytes = sum(len(raw) for _, _, raw in inputs)
    by_group: dict[str, tuple[int, int]] = {}
    for group, _, raw in inputs:
        count, size = by_group.get(group, (0, 0))
        by_group[group] = (count + 1, size + len(raw))
    parsers: dict[str, Any] = {}
    for name, results in runs.items():
        walls = [w for result in results for w in result["wall_s"]]
        cpus = [c for result in results for c in result["cpu_s"]]
        wall = statistics.median(walls)
        groups = {}
        for group, (count, size) in by_group.items():
            seconds = statistics.median(
                s for result in results for s in result["group_wall_s"].get(group, [])
            )
            groups[group] = {
                "messages": count,
                "bytes": size,
                "median_wall_s": seconds,
                "messages_per_s": count / seconds,
            }
        parsers[name] = {
            "timed_passes": len(walls),
            "median_wall_s": wall,
            "min_wall_s": min(walls),
            "max_wall_s": max(walls),
            "median_cpu_s": statistics.median(cpus),
            "messages_per_s": len(inputs) / wall,
            "mb_per_s": total_bytes / MB / wall,
            "failures": results[0]["failures"],
            "baseline_rss_mib": max(r["baseline_rss_kib"] for r in results) / 1024,
            "peak_rss_mib": max(r["peak_rss_kib"] for r in results) / 1024,
            "groups": groups,
        }
    ratios = {}
    if "parse_lead" in parsers:
        lead_rate = parsers["parse_lead"]["messages_per_s"]
        for name in parsers:
            if name != "parse_lead":
                ratios[f"parse_lead / {name}"] = (
                    lead_rate / parsers[name]["messages_per_s"]
                )
    return {
        "messages": len(inputs),
        "bytes": total_bytes,
        "parsers": parsers,
        "speed_ratios": ratios,
    }


def print_table(summary: dict[str, Any], counts: dict[str, int]) -> None:
    """Print the summary as a plain-text table."""
    info = summary["machine"]
    print(
        f"CPU: {info['cpu_model'] or '?'} ({info['cores']} cores), "
        f"platform.processor()={info['platform_processor']!r}, "
        f"Python {info['python']}, {info['date_utc']}, commit {info['commit']}"
    )
    print(
        f"inputs: {summary['messages']} messages, {summary['bytes']} bytes "
        f"({counts['wrapped']} bare bodies wrapped, "
        f"{counts['binary_skipped']} binary files left out)"
    )
    print(
        f"{'parser':<16} {'passes':>6} {'median s':>9} {'cpu s':>8} "
        f"{'msg/s':>8} {'MB/s':>7} {'fail':>5} {'base MiB':>9} {'peak MiB':>9}"
    )
    for name, row in summary["parsers"].items():
        failures = sum(row["failures"].values())
        print(
            f"{name:<16} {row['timed_passes']:>6} {row['median_wall_s']:>9.3f} "
            f"{row['median_cpu_s']:>8.3f} {row['messages_per_s']:>8.1f} "
            f"{row['mb_per_s']:>7.2f} {failures:>5} "
            f"{row['baseline_rss_mib']:>9.1f} {row['peak_rss_mib']:>9.1f}"
        )
    print("per input set (median wall s, msg/s):")
    for name, row in summary["parsers"].items():
        cells = ", ".join(
            f"{group} {g['messages']} msgs {g['median_wall_s']:.3f} s "
            f"{g['messages_per_s']:.1f}/s"
            for group, g in row["groups"].items()
        )
        print(f"  {name:<16} {cells}")
    for name, row in summary["parsers"].items():
        if row["failures"]:
            print(f"  {name} exceptions: {row['failures']}")
    print("speed ratios (messages/s of parse_lead divided by the other's):")
    for label, value in summary["speed_ratios"].items():
        print(f"  {label}: {value:.3f}")


def _time_stages() -> dict[str, float]:
    from leadparse import api
    from leadparse.pipeline import MessageDraft, Pipeline
    from leadparse.policy import Policy

    totals: dict[str, float] = {}

    class Timed:
        def __init__(self, inner: Any) -> None:
            self.name = inner.name
            self.always_run = getattr(inner, "always_run", False)
            self.inner = inner

        def __call__(self, draft: MessageDraft, policy: Policy) -> MessageDraft:
            started = time.perf_counter()
            try:
                result: MessageDraft = self.inner(draft, policy)
            finally:
                totals[self.name] = totals.get(self.name, 0.0) + (
                    time.perf_counter() - started
                )
            return result

    api._DEFAULT_PIPELINE = Pipeline(Timed(item) for item in Pipeline.default())
    return totals


def _print_regex_callers(stats: pstats.Stats) -> None:
    """Print which functions spend the most own time in ``re.Pattern.search``."""
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for function, (_, _, own, _, callers) in table.items():
        if function[2] != "<method 'search' of 're.Pattern' objects>":
            continue
        print(f"re.Pattern.search: {own:.3f} s own time; top callers (s, calls):")
        ranked = sorted(callers.items(), key=lambda item: -item[1][2])
        for (filename, line, name), figures in ranked[:10]:
            where = filename.replace(str(REPO) + "/", "")
            print(f"  {figures[2]:8.3f} {figures[1]:>8} {where}:{line}({name})")


def run_profile(top: int) -> None:
    """Profile parse_lead over the inputs and print the hot spots.

    One warm-up pass runs first. A second pass without the profiler times each
    pipeline stage, and a third runs under cProfile, whose per-call overhead
    inflates pure-Python code more than C code such as regular expressions.
    """
    import logging

    from leadparse import parse_lead

    logging.disable(logging.CRITICAL)
    inputs, _ = load_inputs()
    for _, _, raw in inputs:
        with contextlib.suppress(Exception):
            parse_lead(raw)
    totals = _time_stages()
    per_input: list[tuple[float, int, str]] = []
    for _, name, raw in inputs:
        started = time.perf_counter()
        with contextlib.suppress(Exception):
            parse_lead(raw)
        per_input.append((time.perf_counter() - started, len(raw), name))
    stage_totals = dict(totals)

    profiler = cProfile.Profile()
    profiler.enable()
    for _, _, raw in inputs:
        with contextlib.suppress(Exception):
            parse_lead(raw)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    # Library functions only, so the pipeline's own hot spots are not pushed
    # out of the list by the stdlib and pdfminer frames under them.
    stats.sort_stats("cumulative").print_stats(r"src/leadparse/(?!api|pipeline)", top)
    print(out.getvalue())
    _print_regex_callers(stats)
    print(f"time per stage without the profiler, {len(inputs)} inputs (s):")
    for stage, seconds in sorted(stage_totals.items(), key=lambda kv: -kv[1]):
        print(f"  {stage:<14} {seconds:8.3f}")
    print("slowest inputs without the profiler (s, bytes, file):")
    for seconds, size, name in sorted(per_input, reverse=True)[:10]:
        print(f"  {seconds:8.3f} {size:>9} {name}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table or JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="child interpreters started per parser, interleaved (default 3)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="timed passes over all inputs in each child (default 3)",
    )
    parser.add_argument(
        "--parsers",
        default=",".join(PARSERS),
        help=f"comma-separated parsers to run (default {','.join(PARSERS)})",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile parse_lead with cProfile instead of timing the parsers",
    )
    parser.add_argument(
        "--top", type=int, default=25, help="functions listed by --profile"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(run_worker(args.worker, args.repeat)))
        return 0
    if not CORPUS.is_dir():
        print(f"note: corpus not found at {CORPUS}; measuring fixtures/ only")
    if args.profile:
        run_profile(args.top)
        return 0

    names = [name.strip() for name in args.parsers.split(",") if name.strip()]
    for name in names:
        if name not in PARSERS:
            parser.error(f"unknown parser {name!r}; choose from {', '.join(PARSERS)}")
    inputs, counts = load_inputs()
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            runs[name].append(_spawn(name, args.repeat))
    summary = summarize(runs, inputs)
    summary["machine"] = machine()
    summary["inputs"] = counts
    summary["settings"] = {"rounds": args.rounds, "repeat": args.repeat}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_table(summary, counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
