"""Files of tweets at scale: the command line and the Spark job on 1,000,000 rows, by cores.

    make bench-files        # minutes; writes bench/files.json and prints a table

The rows are the 10,000 tweets of the data set repeated (or generated words, without it), with
their ids made unique. The command line runs with 1 process and with every core (peak RSS of the
whole process tree); the Spark job with local[1] and local[2], timed from spark-submit to exit,
so its start-up (about 10 s here) is counted.
"""

import csv
import json
import os
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from bench import load_tweets  # noqa: E402

ROWS = 1_000_000


def timed(command, env=None):
    """Run a command; return seconds and the peak RSS (MB) of its process tree's largest member."""
    code = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        f"r = subprocess.run({command!r}, cwd={str(ROOT)!r}, stdout=subprocess.DEVNULL, "
        "stderr=subprocess.DEVNULL); "
        "print(r.returncode, time.perf_counter() - t, "
        "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    returncode, seconds, kb = out.stdout.split()
    if returncode != "0":
        sys.exit(f"{command} failed ({returncode})")
    return float(seconds), int(kb) / 1024


def main():
    tweets, source = load_tweets()
    python = str(ROOT / ".venv" / "bin" / "python")
    spark_submit = str(Path(sys.executable).parent / "spark-submit")
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    figures = {"rows": ROWS, "tweets": source, "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tweets.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "text"])
            for i in range(ROWS):
                writer.writerow([i, tweets[i % len(tweets)]])
        print(f"{ROWS:,} rows of {source}", flush=True)
        for processes in (1, os.cpu_count()):
            out = Path(tmp) / "labels.csv"
            command = [python, "-m", "score", str(path), str(out), f"--processes={processes}"]
            seconds, peak = timed(command)
            figures[f"cli_{processes}"] = {"tweets_per_s": ROWS / seconds, "peak_rss_mb": peak}
            print(
                f"  command line, {processes} process(es): {ROWS / seconds:,.0f} tweets/s",
                flush=True,
            )
        for cores in (1, 2):
            out = Path(tmp) / "labels.parquet"
            command = [
                spark_submit,
                "--master",
                f"local[{cores}]",
                "spark_score.py",
                str(path),
                str(out),
            ]
            seconds, _ = timed(command, env)
            figures[f"spark_{cores}"] = {"tweets_per_s": ROWS / seconds, "seconds": seconds}
            print(f"  Spark local[{cores}]: {ROWS / seconds:,.0f} tweets/s", flush=True)
    (ROOT / "bench" / "files.json").write_text(json.dumps(figures, indent=2) + "\n")
    c1, cn = figures["cli_1"], figures[f"cli_{os.cpu_count()}"]
    s1, s2 = figures["spark_1"], figures["spark_2"]
    cli_gain = cn["tweets_per_s"] / c1["tweets_per_s"]
    spark_gain = s2["tweets_per_s"] / s1["tweets_per_s"]
    rows = [
        ("command line, 1 process", c1["tweets_per_s"], 1.0, f"{c1['peak_rss_mb']:.0f}"),
        (f"command line, {os.cpu_count()} processes", cn["tweets_per_s"], cli_gain,
         f"{cn['peak_rss_mb']:.0f}"),
        (f"Spark, local[1] ({s1['seconds']:.0f} s)", s1["tweets_per_s"], 1.0, ""),
        (f"Spark, local[2] ({s2['seconds']:.0f} s)", s2["tweets_per_s"], spark_gain, ""),
    ]  # fmt: skip
    table = [
        f"| {ROWS:,} rows | tweets/s | x one core | peak RSS (MB) |",
        "| --- | --: | --: | --: |",
    ]
    table += [f"| {name} | {rate:,.0f} | {gain:.2f} | {rss} |" for name, rate, gain, rss in rows]
    print("\n" + "\n".join(table))
    write_section("\n".join(table), figures)


SECTION = "## Files at scale"


def write_section(table, figures):
    """Put the table in bench/RESULTS.md under its own heading, which make bench keeps."""
    path = ROOT / "bench" / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    text = text.split(SECTION)[0].rstrip("\n")
    path.write_text(
        f"""{text}

{SECTION}

Latest `make bench-files`: {date.today()}, {figures["cores"]} cores, {figures["tweets"]}. The
command line is timed from start to exit, its peak RSS is the largest process of its tree; the Spark
job is timed from `spark-submit` to exit, its start-up (about 10 s) included.

{table}
"""
    )


if __name__ == "__main__":
    main()
