"""Memory per gunicorn worker with one, two, ... of models.json's models (make bench-models).

For each n, `make api-start` serves a catalogue of the first n models (MODELS_FILE, the default
first), with no job worker beside it; each worker's RSS and PSS are read once it answers, after 200
predict requests to every model it holds. Models are loaded before gunicorn forks, so the workers
share their pages: PSS is what each worker costs the machine, RSS what it touches.
"""

import json
import os
import statistics
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (bench/ is on the path: this script's folder)

CATALOGUE = bench.ROOT / "models.json"


def warm(server, names):
    body = bench.PAYLOAD.read_bytes()
    for name in names:
        url = f"https://127.0.0.1:{server.port}/api/v1/models/{name}/predict"
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {bench.TOKEN}"}
        for _ in range(200):
            request = urllib.request.Request(url, data=body, headers=headers)
            with urllib.request.urlopen(request, context=server.context, timeout=10) as answer:
                answer.read()


def main():
    document = json.loads(CATALOGUE.read_text())
    models = document["models"]
    default = next(m for m in models if m["name"] == document["default"])
    ordered = [default, *(m for m in models if m is not default)]
    os.environ["JOB_WORKERS_WITH_API"] = "0"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bench.prepare(folder, bench.load_tweets()[0])
        for n in range(1, len(ordered) + 1):
            chosen = [
                {**m, "versions": [str(bench.ROOT / v) for v in m["versions"]]} for m in ordered[:n]
            ]
            path = folder / f"models-{n}.json"
            path.write_text(json.dumps({"default": default["name"], "models": chosen}))
            os.environ["MODELS_FILE"] = str(path)
            server = bench.Server(f"models-{n}", bench.COMMANDS["service"], folder)
            try:
                warm(server, [m["name"] for m in chosen])
                memory = server.worker_memory()
            finally:
                server.stop()
            rss = statistics.median(w["rss_mb"] for w in memory)
            pss = statistics.median(w["pss_mb"] for w in memory)
            names = ", ".join(m["name"] for m in chosen)
            rows.append(f"| {n} ({names}) | {len(memory)} | {rss:.0f} | {pss:.0f} |")
            print(rows[-1], flush=True)
    print()
    print("| Models | Workers | RSS per worker, MB (median) | PSS per worker, MB (median) |")
    print("| --- | --: | --: | --: |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
