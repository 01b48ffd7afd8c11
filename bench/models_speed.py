"""Each model's in-process speed (make bench, make bench-speed): tweets/s, cold and warm.

For each model of models.json, in rounds: cold, a model just loaded (registry.load_one) labels
10,000 tweets once, every token new to its caches; warm, the same model labels them again, the
best of 5 passes after the cold one (a running service's caches are warm). One core, no server.

Timed by this process's CPU time (time.process_time), and by the wall clock beside it: on a
machine shared with other work the wall clock also counts the time the process waited for a core,
which swings from round to round (0.5 to 1.1 of one model's speed over the same model's, here),
while its CPU time does not. In each round the models take turns, in an order that turns round by
round; the table gives medians over the rounds, and each model's ratio to the default's as the
median of the rounds' ratios; every round is printed.
"""

import argparse
import json
import os
import statistics
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (bench/ is on the path: this script's folder)
import registry  # noqa: E402

SECTION = "## Each model in-process"
TWEETS = 10_000
WARM_PASSES = 5  # warm: the best of these, after the cold pass
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
FIGURES = ("cold", "warm", "cold_wall", "warm_wall")  # tweets/s of CPU time, then of wall time


def passes(run, tweets, count):
    """Return each pass's seconds, (CPU, wall), of `count` runs over the tweets."""
    times = []
    for _ in range(count):
        started = {name: clock() for name, clock in CLOCKS.items()}
        run(tweets)
        times.append([clock() - started[name] for name, clock in CLOCKS.items()])
    return times


def cold_and_warm(name, tweets):
    """Return a freshly loaded model's tweets/s: {cold, warm, cold_wall, warm_wall}."""
    served = registry.load_one(name=name).get(name)
    (cold_cpu, cold_wall), *_ = passes(served.model.run, tweets, 1)
    warm = passes(served.model.run, tweets, WARM_PASSES)
    n = len(tweets)
    return {
        "cold": n / cold_cpu,
        "warm": n / min(cpu for cpu, _ in warm),
        "cold_wall": n / cold_wall,
        "warm_wall": n / min(wall for _, wall in warm),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    catalogue = json.loads(registry.MODELS_FILE.read_text())
    default = catalogue["default"]
    names = [default, *(m["name"] for m in catalogue["models"] if m["name"] != default)]
    tweets, source = bench.load_tweets()
    tweets = tweets[:TWEETS]
    print(f"{len(tweets):,} {source}, {args.rounds} rounds", flush=True)
    runs = {name: [] for name in names}
    for n in range(1, args.rounds + 1):
        turn = n % len(names)
        for name in names[turn:] + names[:turn]:
            runs[name].append(cold_and_warm(name, tweets))
        line = "; ".join(
            f"{m} {runs[m][-1]['cold']:,.0f} cold, {runs[m][-1]['warm']:,.0f} warm" for m in names
        )
        print(f"  round {n} (tweets per CPU second): {line}", flush=True)
    text = report(runs, default, args.rounds, source)
    print()
    print(text)
    write_section(text)


def report(runs, default, rounds, source):
    """The table: medians, ratios to the default's (medians of the rounds' ratios), each round."""

    def median(name, key):
        return statistics.median(r[key] for r in runs[name])

    def ratio(name, key):
        return statistics.median(
            r[key] / d[key] for r, d in zip(runs[name], runs[default], strict=True)
        )

    rows = [
        "| Model | Cold: tweets/s | Warm: tweets/s | Cold / default's | Warm / default's "
        "| Wall clock, cold / warm: tweets/s | Wall clock, warm / default's |",
        "| --- | --: | --: | --: | --: | --: | --: |",
    ]
    for name in runs:
        label = f"`{name}` (the default)" if name == default else f"`{name}`"
        rows.append(
            f"| {label} | {median(name, 'cold'):,.0f} | {median(name, 'warm'):,.0f} | "
            f"{ratio(name, 'cold'):.2f} | {ratio(name, 'warm'):.2f} | "
            f"{median(name, 'cold_wall'):,.0f} / {median(name, 'warm_wall'):,.0f} | "
            f"{ratio(name, 'warm_wall'):.2f} |"
        )
    rows += [
        "",
        f"Medians of {rounds} rounds, {source}; tweets per second of the process's CPU time "
        "unless it says wall clock. Each round, cold / warm:",
        "",
    ]
    for name, model_runs in runs.items():
        each = ", ".join(f"{r['cold']:,.0f} / {r['warm']:,.0f}" for r in model_runs)
        rows.append(f"- `{name}`: {each}")
    return "\n".join(rows)


def write_section(text):
    """Put the table in bench/RESULTS.md under its own heading, which make bench keeps."""
    path = bench.ROOT / "bench" / "RESULTS.md"
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    before, _, after = old.partition(SECTION)
    rest = after.partition("\n## ")
    tail = ("\n## " + rest[2]) if rest[1] else ""
    section = f"""{SECTION}

Latest `make bench-speed` (part of `make bench`): {date.today()}, {os.cpu_count()} cores, one
process. Each model of `models.json` labels {TWEETS:,} tweets with `run()`, the batch of an
in-process caller: cold, just loaded (its token caches empty); warm, the best of {WARM_PASSES}
passes after that one. Timed by the process's CPU time, which other work on the machine does not
inflate; the wall clock beside it.

{text}
"""
    path.write_text(before.rstrip("\n") + "\n\n" + section + tail)


if __name__ == "__main__":
    main()
