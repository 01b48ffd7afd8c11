"""Label tweets on Spark: CSV or Parquet in, Parquet or CSV out, with columns id, label, score.

    spark-submit spark_score.py tweets.csv labels.parquet                 # local[*]
    spark-submit --master spark://host:7077 spark_score.py in.parquet out.csv
    make spark-score IN=tweets.csv OUT=labels.parquet

The format of each side is read from its extension (.parquet, else CSV with a header row); the
input needs columns id and text. model.py's own scorer runs on the executors through mapInPandas:
model.py, contract.py and the artifacts are shipped with the job, and each executor process loads
the artifacts once and checks them against their manifest. A row that cannot be labelled (no text,
too long) gets an empty label and score and is counted; labels equal the API's for the same text.
"""

import argparse
import functools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SHIPPED = ("model.py", "contract.py", "spark_score.py")
SCHEMA = "id string, label string, score double"


@functools.cache
def executor_model():
    """The model, loaded once per executor process from the artifacts shipped with the job."""
    from pyspark import SparkFiles

    import model

    return model.load(Path(SparkFiles.get("artifacts")))


def label_partition(frames):
    """Label each pandas batch of a partition with model.py's scorer, by the shared contract."""
    import pandas as pd

    import contract
    import model

    classifier = executor_model()
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
    parser.add_argument("--artifacts", default=str(ROOT / "artifacts"))
    args = parser.parse_args(argv)

    spark = SparkSession.builder.appName("tweet-sentiment").getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    for name in SHIPPED:
        spark.sparkContext.addPyFile(str(ROOT / name))
    spark.sparkContext.addFile(args.artifacts, recursive=True)
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

    labelled = frame.select("id", "text").mapInPandas(spark_score.label_partition, SCHEMA)
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
