"""Fuzz every decoder in-process with the mutation engine of tests/fuzz/mutate.py and report, per target:
inputs run, crashes (exception type, where, a minimised reproducer in bench/out/fuzz/), hangs (an input over
--hang seconds), the slowest input and its time, and inputs/s. Exit status 1 when anything crashed.

`--engine atheris` runs each target under atheris instead (libFuzzer, coverage-guided; `pip install atheris`,
the `fuzz` extra), one process per target, with the same seeds, the format's words as its dictionary and the
same report; a crash does not stop a target there either.

The targets are tests/fuzz/targets.py's: each feeds one decoder and lets through only the error that decoder
documents, so any exception out of a target is a crash. Inputs start from valid seeds (the protocol
reference's worked examples and the tests' fixtures) and are round-robined across targets, so a slow target
cannot starve the others before --seconds runs out. An input still running after --abort seconds is
interrupted (SIGALRM) and counted as a hang; its time is then the abort time.

    .venv/bin/python bench/fuzz.py [--inputs 1000000] [--seconds 900] [--target keys ...] [--seed 1]
                                   [--engine mutate|atheris]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fuzz.mutate import Mutator  # noqa: E402
from tests.fuzz.targets import TARGETS, Target  # noqa: E402

OUT = ROOT / "bench" / "out" / "fuzz"
BATCH = 500  # inputs a target runs before the next target's turn
RECENT = 64  # mutated inputs kept to mutate again (deeper chains than seed + 4 mutations)
MINIMISE_RUNS = 3000
MINIMISE_SECONDS = 30.0
HANGS_KEPT = 5
SOURCE_MARK = "/src/agentpulse/"
TARGETS_MARK = "/tests/fuzz/"


class Abort(BaseException):
    """SIGALRM: the input ran past the abort time. A BaseException, so no target's `except` takes it."""


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise Abort


@dataclass(slots=True)
class Outcome:
    seconds: float
    error: BaseException | None = None
    aborted: bool = False


@dataclass(slots=True)
class Crash:
    signature: str
    error: str
    trace: str
    data: bytes
    count: int = 1
    reproducer: str = ""


@dataclass(slots=True)
class Stats:
    target: Target
    quota: int
    inputs: int = 0
    busy: float = 0.0  # seconds spent making and running this target's inputs
    crashes: dict[str, Crash] = field(default_factory=dict)
    crash_inputs: int = 0
    hangs: list[tuple[float, bytes]] = field(default_factory=list)
    hang_count: int = 0
    slowest: tuple[float, bytes] = (0.0, b"")

    @property
    def done(self) -> bool:
        return self.inputs >= self.quota


def run_one(target: Target, data: bytes, abort_after: float) -> Outcome:
    error: BaseException | None = None
    aborted = False
    start = time.perf_counter()
    try:
        signal.setitimer(signal.ITIMER_REAL, abort_after)
        try:
            target.run(data)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except Abort:
        aborted = True
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit and friends from a decoder are crashes too
        error = exc
    return Outcome(time.perf_counter() - start, error, aborted)


def where(trace: TracebackType | None) -> str:
    """The innermost frame in agentpulse's source, else in the targets (a caller's step they repeat), else
    the innermost frame: `path:line function`."""
    frames = traceback.extract_tb(trace)
    for mark in (SOURCE_MARK, TARGETS_MARK):
        ours = [frame for frame in frames if mark in frame.filename]
        if ours:
            frame = ours[-1]
            return f"{frame.filename.split(mark, 1)[-1]}:{frame.lineno} {frame.name}"
    if not frames:
        return "?"
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno} {frames[-1].name}"


def signature(error: BaseException) -> str:
    return f"{type(error).__name__} at {where(error.__traceback__)}"


def describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text[:200]}{'...' if len(text) > 200 else ''}"


def inputs_for(stats: Stats, rng: random.Random) -> Iterator[bytes]:
    """Every seed as it is first, then mutations of the seeds and of recent mutations."""
    target = stats.target
    corpus = list(target.seeds)
    mutator = Mutator(rng, corpus, target.tokens)
    recent: list[bytes] = []
    yield from corpus
    while True:
        base = rng.choice(recent) if recent and rng.random() < 0.2 else rng.choice(corpus)
        data = mutator.mutate(base)
        if len(recent) < RECENT:
            recent.append(data)
        else:
            recent[rng.randrange(RECENT)] = data
        yield data


def record(stats: Stats, data: bytes, outcome: Outcome, hang: float) -> None:
    if outcome.seconds > stats.slowest[0]:
        stats.slowest = (outcome.seconds, data)
    if outcome.aborted or outcome.seconds > hang:
        stats.hang_count += 1
        if len(stats.hangs) < HANGS_KEPT:
            stats.hangs.append((outcome.seconds, data))
    if outcome.error is not None:
        stats.crash_inputs += 1
        key = signature(outcome.error)
        crash = stats.crashes.get(key)
        if crash is None:
            trace = "".join(traceback.format_exception(outcome.error))
            stats.crashes[key] = Crash(key, describe(outcome.error), trace, data)
        else:
            crash.count += 1
            if len(data) < len(crash.data):
                crash.data = data


def fuzz(selected: list[Stats], rng: random.Random, deadline: float, hang: float, abort_after: float) -> None:
    streams = {id(stats): inputs_for(stats, random.Random(rng.getrandbits(64))) for stats in selected}
    while time.monotonic() < deadline:
        pending = [stats for stats in selected if not stats.done]
        if not pending:
            return
        for stats in pending:
            stream = streams[id(stats)]
            began = time.perf_counter()
            for _ in range(min(BATCH, stats.quota - stats.inputs)):
                data = next(stream)
                record(stats, data, run_one(stats.target, data, abort_after), hang)
                stats.inputs += 1
            stats.busy += time.perf_counter() - began
            if time.monotonic() >= deadline:
                return


# --------------------------------------------------------------------------------------------------------
# --engine atheris: a process per target, libFuzzer's coverage guiding the mutations


def _dict_entry(token: bytes) -> str:
    return (
        '"' + "".join(chr(b) if 0x20 <= b < 0x7F and b not in b'"\\' else f"\\x{b:02x}" for b in token) + '"'
    )


def _stats_json(stats: Stats) -> dict[str, object]:
    return {
        "inputs": stats.inputs,
        "busy": stats.busy,
        "crash_inputs": stats.crash_inputs,
        "crashes": [
            {
                "signature": c.signature,
                "error": c.error,
                "trace": c.trace,
                "count": c.count,
                "data": c.data.hex(),
            }
            for c in stats.crashes.values()
        ],
        "hang_count": stats.hang_count,
        "hangs": [(seconds, data.hex()) for seconds, data in stats.hangs],
        "slowest": (stats.slowest[0], stats.slowest[1].hex()),
    }


def _load_stats(stats: Stats, data: dict[str, object]) -> None:
    stats.inputs = int(data["inputs"])  # type: ignore[call-overload]
    stats.busy = float(data["busy"])  # type: ignore[arg-type]
    stats.crash_inputs = int(data["crash_inputs"])  # type: ignore[call-overload]
    for item in data["crashes"]:  # type: ignore[attr-defined]
        crash = Crash(
            item["signature"], item["error"], item["trace"], bytes.fromhex(item["data"]), item["count"]
        )
        stats.crashes[crash.signature] = crash
    stats.hang_count = int(data["hang_count"])  # type: ignore[call-overload]
    stats.hangs = [(seconds, bytes.fromhex(text)) for seconds, text in data["hangs"]]  # type: ignore[attr-defined]
    seconds, text = data["slowest"]  # type: ignore[misc]
    stats.slowest = (seconds, bytes.fromhex(text))


def atheris_child(name: str, quota: int, seconds: float, hang: float, abort_after: float) -> int:
    """Run one target under atheris until `quota` inputs or `seconds`; stats go to OUT/atheris-<name>.json.
    Started through bench/fuzz_atheris.py, which imports agentpulse under atheris' instrumentation."""
    import atheris  # type: ignore[import-not-found]

    stats = Stats(TARGETS[name], quota)
    corpus = OUT / "corpus" / name
    corpus.mkdir(parents=True, exist_ok=True)
    for index, seed in enumerate(stats.target.seeds):
        (corpus / f"seed-{index}").write_bytes(seed)
    dictionary = OUT / "corpus" / f"{name}.dict"
    dictionary.write_text("".join(_dict_entry(token) + "\n" for token in stats.target.tokens))
    stats_path = OUT / f"atheris-{name}.json"
    began = time.perf_counter()

    def write() -> None:
        stats.busy = time.perf_counter() - began
        stats_path.write_text(json.dumps(_stats_json(stats)))

    def one(data: bytes) -> None:
        start = time.perf_counter()
        error: BaseException | None = None
        try:
            stats.target.run(data)
        except BaseException as exc:  # recorded, not raised: a crash must not end the target's run
            error = exc
        record(stats, data, Outcome(time.perf_counter() - start, error), hang)
        stats.inputs += 1
        if stats.inputs % 1000 == 0 or stats.done:
            write()
        if stats.done:
            os._exit(0)

    libfuzzer = [
        sys.argv[0],
        f"-max_total_time={max(1, int(seconds))}",
        f"-timeout={max(1, int(abort_after))}",
        f"-runs={quota + len(stats.target.seeds) + 1}",
        "-max_len=65540",
        "-rss_limit_mb=3072",
        f"-dict={dictionary}",
        f"-artifact_prefix={OUT}/atheris-{name}-",
        str(corpus),
    ]
    atheris.Setup(libfuzzer, one)
    try:
        atheris.Fuzz()
    finally:
        write()
    return 0


def run_atheris(selected: list[Stats], args: argparse.Namespace, deadline: float) -> None:
    """Each target in a process of its own, the time left shared by the targets not run yet."""
    OUT.mkdir(parents=True, exist_ok=True)
    for index, stats in enumerate(selected):
        name = stats.target.name
        seconds = (deadline - time.monotonic()) / (len(selected) - index)
        if seconds < 1:
            break
        child = Path(__file__).with_name("fuzz_atheris.py")
        command = [sys.executable, str(child), "--atheris-child", name, "--inputs", str(stats.quota)]
        command += ["--seconds", f"{seconds:.0f}", "--hang", str(args.hang), "--abort", str(args.abort)]
        (OUT / f"atheris-{name}.json").unlink(missing_ok=True)
        with open(OUT / f"atheris-{name}.log", "wb") as log:
            result = subprocess.run(
                command, stdout=log, stderr=subprocess.STDOUT, timeout=seconds + 120, check=False
            )
        stats_path = OUT / f"atheris-{name}.json"
        if stats_path.exists():
            _load_stats(stats, json.loads(stats_path.read_text()))
        if result.returncode != 0:
            print(
                f"bench/fuzz.py: atheris on {name} exited {result.returncode}; see {OUT}/atheris-{name}.log"
            )


def minimise(target: Target, data: bytes, wanted: str, abort_after: float) -> bytes:
    """Drop chunks (halves, then quarters, ... then single bytes) while the same crash still happens."""
    runs = 0
    stop = time.monotonic() + MINIMISE_SECONDS

    def same(candidate: bytes) -> bool:
        nonlocal runs
        runs += 1
        error = run_one(target, candidate, abort_after).error
        return error is not None and signature(error) == wanted

    chunk = max(1, len(data) // 2)
    while chunk >= 1 and runs < MINIMISE_RUNS and time.monotonic() < stop:
        start = 0
        while start < len(data) and runs < MINIMISE_RUNS and time.monotonic() < stop:
            candidate = data[:start] + data[start + chunk :]
            if same(candidate):
                data = candidate
            else:
                start += chunk
        chunk //= 2
    return data


def save(name: str, data: bytes, note: str) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}-{hashlib.sha1(data).hexdigest()[:10]}.bin"
    path.write_bytes(data)
    path.with_suffix(".txt").write_text(note)
    return path


def shown(data: bytes, limit: int = 48) -> str:
    """An input for a table cell: repr, cut, with `|` escaped for Markdown."""
    text = repr(data[:limit]) + (f"... ({len(data)} bytes)" if len(data) > limit else "")
    return text.replace("|", "\\|")


def write_artifacts(selected: list[Stats], abort_after: float) -> None:
    for stats in selected:
        name = stats.target.name
        for crash in stats.crashes.values():
            small = minimise(stats.target, crash.data, crash.signature, abort_after)
            note = (
                f"target: {name}\ncrash: {crash.signature}\n{crash.error}\ninputs that crashed this way: "
                f"{crash.count}\noriginal size: {len(crash.data)} bytes, minimised: {len(small)} bytes\n"
                f"input (repr): {small[:2000]!r}\n\n{crash.trace}"
            )
            error_name = crash.signature.split(" ", 1)[0]
            crash.reproducer = str(save(f"{name}-{error_name}", small, note).relative_to(ROOT))
        for seconds, data in stats.hangs:
            save(
                f"{name}-hang",
                data,
                f"target: {name}\nseconds: {seconds:.3f}\ninput (repr): {data[:2000]!r}\n",
            )
        seconds, data = stats.slowest
        save(
            f"{name}-slowest",
            data,
            f"target: {name}\nseconds: {seconds:.6f}\ninput (repr): {data[:2000]!r}\n",
        )


def table(selected: list[Stats], hang: float) -> str:
    lines = [
        f"| target | inputs | inputs/s | crashes (unique) | hangs (> {hang:g} s) | slowest ms | slowest input |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for stats in selected:
        rate = stats.inputs / stats.busy if stats.busy else 0.0
        seconds, data = stats.slowest
        lines.append(
            f"| {stats.target.name} | {stats.inputs:,} | {rate:,.0f} | {stats.crash_inputs:,} "
            f"({len(stats.crashes)}) | {stats.hang_count} | {seconds * 1000:.2f} | {shown(data)} |"
        )
    total = sum(stats.inputs for stats in selected)
    busy = sum(stats.busy for stats in selected)
    crashes = sum(stats.crash_inputs for stats in selected)
    unique = sum(len(stats.crashes) for stats in selected)
    hangs = sum(stats.hang_count for stats in selected)
    slowest = max(stats.slowest[0] for stats in selected) if selected else 0.0
    lines.append(
        f"| **all** | **{total:,}** | {total / busy if busy else 0:,.0f} | {crashes:,} ({unique}) | {hangs} "
        f"| {slowest * 1000:.2f} | |"
    )
    return "\n".join(lines)


def crash_list(selected: list[Stats]) -> str:
    lines = []
    for stats in selected:
        for crash in stats.crashes.values():
            lines.append(f"- {stats.target.name}: {crash.signature}: {crash.error} -> {crash.reproducer}")
    return "\n".join(lines) if lines else "- none"


def report_json(selected: list[Stats], args: argparse.Namespace, wall: float) -> dict[str, object]:
    return {
        "command": sys.argv,
        "engine": args.engine,
        "seed": args.seed,
        "wall_seconds": round(wall, 1),
        "targets": {
            stats.target.name: {
                "inputs": stats.inputs,
                "inputs_per_second": round(stats.inputs / stats.busy) if stats.busy else 0,
                "crash_inputs": stats.crash_inputs,
                "crashes": [
                    {"signature": c.signature, "error": c.error, "count": c.count, "reproducer": c.reproducer}
                    for c in stats.crashes.values()
                ],
                "hangs": stats.hang_count,
                "slowest_seconds": round(stats.slowest[0], 6),
            }
            for stats in selected
        },
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs in all, shared by the targets")
    parser.add_argument("--seconds", type=float, default=900.0, help="stop fuzzing after this long")
    parser.add_argument("--target", action="append", choices=sorted(TARGETS), help="only these (repeatable)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hang", type=float, default=1.0, help="an input slower than this is a hang")
    parser.add_argument("--abort", type=float, default=10.0, help="interrupt an input after this long")
    parser.add_argument("--engine", choices=("mutate", "atheris"), default="mutate")
    parser.add_argument("--atheris-child", metavar="TARGET", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.atheris_child:
        return atheris_child(args.atheris_child, args.inputs, args.seconds, args.hang, args.abort)
    names = args.target or list(TARGETS)
    share, extra = divmod(args.inputs, len(names))
    selected = [Stats(TARGETS[name], share + (index < extra)) for index, name in enumerate(names)]
    signal.signal(signal.SIGALRM, _alarm)
    started = time.monotonic()
    engine: Callable[[], None] = (
        (lambda: run_atheris(selected, args, started + args.seconds))
        if args.engine == "atheris"
        else (lambda: fuzz(selected, random.Random(args.seed), started + args.seconds, args.hang, args.abort))
    )
    engine()
    wall = time.monotonic() - started
    write_artifacts(selected, args.abort)
    total = sum(stats.inputs for stats in selected)
    print(
        f"bench/fuzz.py: {total:,} of {args.inputs:,} inputs in {wall:.0f} s ({args.engine}, seed {args.seed})\n"
    )
    print(table(selected, args.hang))
    print("\nCrashes (one line per distinct exception and place; reproducers minimised):")
    print(crash_list(selected))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "report.json").write_text(json.dumps(report_json(selected, args, wall), indent=2) + "\n")
    return 1 if any(stats.crashes for stats in selected) else 0


if __name__ == "__main__":
    sys.exit(main())
