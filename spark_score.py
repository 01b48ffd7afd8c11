"""Label tweets on Spark: CSV or Parquet in, Parquet or CSV out, with columns id, label, score.

    spark-submit spark_score.py tweets.csv labels.parquet                 # local[*]
    spark-submit --master spark://host:7077 spark_score.py in.parquet out.csv
    make spark-score IN=tweets.csv OUT=labels.parquet

The format of each side is read from its extension (.parquet, else CSV with a header row); the
input needs columns id and text. --model names a model of models.json (its default if absent): the
driver loads it from the registry, and its kind's module, contract.py and the folder of the version
it serves are shipped with the job; each executor process loads those artifacts once and checks
them against their manifest, and scores with the kind's own scorer through mapInPandas. A row that
cannot be labelled (no text, too long) gets an empty label and score and is counted; labels equal
the API's for the same text.
"""

import argparse
import functools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SHIPPED = ("model.py", "contract.py", "spark_score.py")  # and the kind's module, if another
SCHEMA = "id string, label string, score double"


@functools.cache
def executor_model(kind, folder):
    """The model, loaded once per executor process from the artifacts shipped with the job."""
    import importlib

    from pyspark import SparkFiles

    return importlib.import_module(kind).load(Path(SparkFiles.get(folder)))


def labeller(kind, folder):
    """mapInPandas's function for a model of the kind (its module's name) in the folder shipped."""
    return functools.partial(label_partition, kind=kind, folder=folder)


def label_partition(frames, kind, folder):
    """Label each pandas batch of a partition with model.py's scorer, by the shared contract."""
    import pandas as pd

    import contract
    import model

    classifier = executor_model(kind, folder)
    for frame in frames:
        tweets = dict(enumerate(frame["text"]))
        good, _ = contract.partition(tweets, contract.LIMITS)  # the rest: no label, no score
        scores = dict(zip(good, classifier.scores(list(good.values())), strict=True))
        yield pd.DataFrame(
            {
                "id": frame["id"].astype("string"),
                "label": [model.postprocess(scores[i]) if i in scores else None for i in tweets],
                "score": [
                    round(scores[i], contract.DECIMALS) if i in scores else None for i in tweets
                ],
            }
        )


def main(argv=None):
    from pyspark.sql import SparkSession

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="CSV (header row) or .parquet, with columns id and text")
    parser.add_argument("target", help=".parquet, or else CSV with a header row")
    parser.add_argument("--model", help="a model's name in models.json; default: its default")
    parser.add_argument("--models-file", default=str(ROOT / "models.json"))
    args = parser.parse_args(argv)
    import registry

    served = registry.load_one(args.models_file, args.model).get()
    folder = served.entry.folders[served.version]
    kind = registry.KINDS[served.entry.kind]
    print(f"labelling with {served.name} {served.version}", file=sys.stderr)

    spark = SparkSession.builder.appName("tweet-sentiment").getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    for name in dict.fromkeys((*SHIPPED, f"{kind}.py")):
        spark.sparkContext.addPyFile(str(ROOT / name))
    spark.sparkContext.addFile(str(folder), recursive=True)
    reader = spark.read
    if args.source.endswith(".parquet"):
        frame = reader.parquet(args.source)
    else:
        frame = reader.option("header", True).option("multiLine", True).option("escape", '"')
        frame = frame.csv(args.source)
    missing = [c for c in ("id", "text") if c not in frame.columns]
    if missing:
        sys.exit(f"{args.source}: no column {' or '.join(missing)}")
    # A file smaller than Spark's split size is one partition: spread it over every core.
    cores = spark.sparkContext.defaultParallelism
    if frame.rdd.getNumPartitions() < cores:
        frame = frame.repartition(cores)
    # By reference to this module, shipped above: executors import it, and its cache, once.
    import spark_score

    labelled = frame.select("id", "text").mapInPandas(
        spark_score.labeller(kind, folder.name), SCHEMA
    )
    if args.target.endswith(".parquet"):
        labelled.write.mode("overwrite").parquet(args.target)
        written = spark.read.parquet(args.target)
    else:
        labelled.write.mode("overwrite").option("header", True).csv(args.target)
        written = spark.read.option("header", True).csv(args.target)
    refused = written.filter("label is null").count()
    print(f"labelled {written.count() - refused:,} rows into {args.target}; {refused:,} refused")
    spark.stop()


if __name__ == "__main__":
    main()
