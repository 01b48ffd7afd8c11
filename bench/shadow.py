"""The shadow's cost (make bench-shadow): the service with no candidate, and with one at 100%.

Two `make api-start` servers side by side, each with 2 workers and its own aliases file: one with
none (stable answers alone), one with tweet-sentiment as the candidate, shadow_percent 100 (every
request is scored by both models; the answers are stable's). payload.json at 16 and at 1
keep-alive connections, the two servers loaded in turn, round after round; medians and every round.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (bench/ is on the path: this script's folder)

sys.path.insert(0, str(bench.ROOT))
import aliases  # noqa: E402
import registry  # noqa: E402

SECTION = "## The shadow's cost"
CANDIDATE = "tweet-sentiment"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=4)
    args = parser.parse_args(argv)
    models = registry.load()
    stable, candidate = models.get(), models.get(CANDIDATE)
    os.environ["JOB_WORKERS_WITH_API"] = "0"  # the API alone: no job worker beside either
    runs = {"alone": {1: [], 16: []}, "shadowed": {1: [], 16: []}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bench.prepare(folder, bench.load_tweets()[0])
        state = aliases.State(
            {"model": stable.name, "version": stable.version},
            {
                "model": candidate.name,
                "version": candidate.version,
                "shadow_percent": 100,
                "canary_percent": 0,
            },
        )
        aliases.write(folder / "shadowed-aliases.json", state)  # bench.Server's file for it
        command = ["make", "--no-print-directory", "api-start"]
        servers = {}
        try:
            for name in runs:
                print(f"starting {name} ...", flush=True)
                servers[name] = bench.Server(name, command, folder)
            for n in range(1, args.rounds + 1):
                print(f"  round {n} of {args.rounds}", flush=True)
                for connections in (16, 1):
                    for name, server in servers.items():
                        run = bench.wrk(server.url, server.body, connections, args.seconds)
                        runs[name][connections].append(run)
            pairs = shadow_pairs(servers["shadowed"])
        finally:
            for server in servers.values():
                server.stop()
    text = report(runs, args, pairs)
    print()
    print(text)
    write_section(text, args)


def shadow_pairs(server):
    """The shadow pairs the shadowed server counted: proof that it shadowed."""
    import urllib.request

    request = urllib.request.Request(
        server.url.replace(f"/api/v1/{bench.TOKEN}/predict", "/api/v1/aliases"),
        headers={"Authorization": f"Bearer {bench.TOKEN}"},
    )
    with urllib.request.urlopen(request, context=server.context, timeout=10) as answer:
        return json.loads(answer.read())["shadow"]["pairs"]


def report(runs, args, pairs):
    rows = [
        "| connections | figure | no candidate | candidate, 100% shadow | ratio |",
        "| --: | --- | --: | --: | --: |",
    ]
    for connections in (16, 1):
        for key, unit in (("requests_per_s", "requests/s"), ("p99_ms", "p99 ms")):
            alone = statistics.median(r[key] for r in runs["alone"][connections])
            shadowed = statistics.median(r[key] for r in runs["shadowed"][connections])
            rows.append(
                f"| {connections} | {unit}, median | {alone:,.1f} | {shadowed:,.1f} | "
                f"{shadowed / alone:.2f} |"
            )
    rows.append("")
    rows.append("Each round, requests/s at 16 connections (no candidate / shadowed):")
    rows.append("")
    for n, (a, s) in enumerate(zip(runs["alone"][16], runs["shadowed"][16], strict=True), 1):
        rows.append(
            f"- round {n}: {a['requests_per_s']:,.0f} / {s['requests_per_s']:,.0f} "
            f"({s['requests_per_s'] / a['requests_per_s']:.2f}); p99 {a['p99_ms']:.1f} / "
            f"{s['p99_ms']:.1f} ms"
        )
    errors = sum(r["errors"] for by in runs.values() for rs in by.values() for r in rs)
    rows.append("")
    rows.append(
        f"Errors: {errors}. The shadowed server counted {pairs:,} shadow pairs "
        f"({args.rounds} rounds of {args.seconds} s per measure)."
    )
    return "\n".join(rows)


def write_section(text, args):
    """Put the table in bench/RESULTS.md under its own heading, which make bench keeps."""
    path = bench.ROOT / "bench" / "RESULTS.md"
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    before, _, after = old.partition(SECTION)
    rest = after.partition("\n## ")
    tail = ("\n## " + rest[2]) if rest[1] else ""
    section = f"""{SECTION}

Latest `make bench-shadow`: {date.today()}, {os.cpu_count()} cores. Two `make api-start` servers of
2 workers, side by side, loaded in turn with `payload.json`: one with no candidate, one with
`{CANDIDATE}` as the candidate at `shadow_percent` 100 (each request scored by both models, the
answer stable's). The load generator shares the cores.

{text}
"""
    path.write_text(before.rstrip("\n") + "\n\n" + section + tail)


if __name__ == "__main__":
    main()
