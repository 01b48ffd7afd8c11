"""The Kafka door: tweets in on one topic, labels out on another, bad messages to an error topic.

    make stream-start                       # KAFKA_BOOTSTRAP_SERVERS=localhost:9092
    python stream.py --check                # is the running processor connected and assigned?

Input: a message whose value is UTF-8 JSON {"id": "...", "text": "..."}. Output: the same key and
headers, value {"id", "label", "score", "model", "model_version"}. One processor serves one
model: STREAM_MODEL, or if empty the stable alias, followed as it moves (aliases/; a batch is
labelled by one model); run one per model, each with its own topics and group id. A message that
cannot be labelled goes to the error topic byte for byte, with headers error.kind, error.status and
error.detail. Messages are taken in batches and labelled in one call. Offsets are committed only
after every output of the batch is acknowledged by the broker: at least once, so a crash can repeat
a batch, never lose one. TERM finishes the batch in hand, commits, leaves the group and exits 0.
"""

import argparse
import json
import logging
import signal
import sys
import time
import urllib.request

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

import contract
import model
import registry
import service

DEFAULTS = {
    **service.SHARED,
    "KAFKA_BOOTSTRAP_SERVERS": "localhost:9092",
    "KAFKA_INPUT_TOPIC": "tweet-sentiment-inputs",
    "KAFKA_OUTPUT_TOPIC": "tweet-sentiment-outputs",
    "KAFKA_ERROR_TOPIC": "tweet-sentiment-errors",
    "KAFKA_GROUP_ID": "tweet-sentiment",
    "STREAM_MODEL": "",  # a model's name in models.json; empty: its default
    # The client's security settings, for a TLS or SASL cluster; empty: librdkafka's defaults.
    "KAFKA_SECURITY_PROTOCOL": "",  # PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    "KAFKA_SASL_MECHANISM": "",  # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
    "KAFKA_SASL_USERNAME": "",
    "KAFKA_SASL_PASSWORD": "",
    "KAFKA_SSL_CA_LOCATION": "",
    "KAFKA_SESSION_TIMEOUT_MS": 10_000,
    "STREAM_BATCH": 500,  # messages taken and labelled at once
    "STREAM_METRICS_PORT": 9243,
    "STREAM_METRICS_HOST": "127.0.0.1",
}
SECURITY = {
    "KAFKA_SECURITY_PROTOCOL": "security.protocol",
    "KAFKA_SASL_MECHANISM": "sasl.mechanism",
    "KAFKA_SASL_USERNAME": "sasl.username",
    "KAFKA_SASL_PASSWORD": "sasl.password",
    "KAFKA_SSL_CA_LOCATION": "ssl.ca.location",
}
log = logging.getLogger("stream")
# The client's errors while no broker answers: said once, in one line, then retried quietly.
UNREACHABLE = {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE}

MESSAGES = Counter("stream_messages", "Messages, by outcome: in, out, error", ["outcome"])
BATCH_SECONDS = Histogram(
    "stream_batch_seconds",
    "Seconds from taking a batch to committing it",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LAG = Gauge("stream_consumer_lag", "Messages not yet processed on the assigned partitions")
ASSIGNED = Gauge("stream_assigned_partitions", "Input partitions assigned to this processor")
CONNECTED = Gauge("stream_connected", "1 once the broker has answered")


class Unlabelled(Exception):
    """A message that goes to the error topic: its kind and a detail (never its text)."""

    def __init__(self, kind, status, detail):
        super().__init__(detail)
        self.kind, self.status, self.detail = kind, status, detail


def parse(value, limits):
    """Return (id, text) of a message's value, or raise Unlabelled saying what is wrong."""
    try:
        document = contract.parse_json(value.decode("utf-8"), "the value")
    except (UnicodeDecodeError, AttributeError):
        raise Unlabelled("not_utf8", 400, "the value is not UTF-8 text") from None
    except contract.NotUnicode as e:
        raise Unlabelled("not_unicode", 400, e.detail) from None
    except contract.BadInput as e:
        raise Unlabelled("not_json", 400, e.detail) from None
    if not isinstance(document, contract.Pairs):
        kind = contract.json_type(document)
        raise Unlabelled("not_an_object", 400, f'the value must be {{"id", "text"}}, got {kind}')
    document = dict(document)
    id_, text = document.get("id"), document.get("text")
    if not isinstance(id_, str) or not id_:
        raise Unlabelled("no_id", 400, 'the value needs "id", a non-empty string')
    if "text" not in document:
        raise Unlabelled("no_text", 400, 'the value has no "text"')
    try:
        contract.check({id_: text}, limits)
    except contract.PredictionError as e:
        kind = "too_long" if isinstance(text, str) else "text_not_string"
        raise Unlabelled(kind, e.status, e.detail) from None
    return id_, text


class Processor:
    """Consume, label in batches, produce, and commit what the broker has acknowledged."""

    def __init__(self, settings):
        self.settings = settings
        self.name = settings["STREAM_MODEL"] or None  # None: the stable alias, as it moves
        if self.name is None:
            self.models = registry.load(
                settings["MODELS_FILE"],
                aliases_file=settings["ALIASES_FILE"],
                database_url=settings["DATABASE_URL"],
            )
        else:
            self.models = registry.load_one(settings["MODELS_FILE"], self.name)
        self.running = True
        self.assignment = []
        self.unreachable = False  # said so already: quiet until the broker answers again
        common = {
            "bootstrap.servers": settings["KAFKA_BOOTSTRAP_SERVERS"],
            # A broker that is down is tried again every second or so, up to every 10 s; the
            # client's own log lines of each failed attempt are left to on_error's one line.
            "reconnect.backoff.ms": 1000,
            "reconnect.backoff.max.ms": 10_000,
            "log_level": 2,
        }
        common.update({SECURITY[k]: settings[k] for k in SECURITY if settings[k]})
        self.consumer = Consumer(
            {
                **common,
                "group.id": settings["KAFKA_GROUP_ID"],
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": settings["KAFKA_SESSION_TIMEOUT_MS"],
                "heartbeat.interval.ms": max(100, settings["KAFKA_SESSION_TIMEOUT_MS"] // 10),
                "error_cb": self.on_error,
            }
        )
        self.producer = Producer(
            {**common, "enable.idempotence": True, "linger.ms": 5, "error_cb": self.on_error}
        )

    def on_error(self, error):
        if error.code() not in UNREACHABLE:
            log.error("kafka: %s", error.str())
        elif not self.unreachable:
            self.unreachable = True
            CONNECTED.set(0)
            log.error(
                "no Kafka broker answers at %s (KAFKA_BOOTSTRAP_SERVERS): %s. Start one or point "
                "KAFKA_BOOTSTRAP_SERVERS at yours; trying again every few seconds, quietly",
                self.settings["KAFKA_BOOTSTRAP_SERVERS"],
                error.str(),
            )

    def reached(self):
        """The broker has answered: say so if it had not been reachable."""
        CONNECTED.set(1)
        if self.unreachable:
            self.unreachable = False
            log.info("the Kafka broker answers again")

    def on_assign(self, consumer, partitions):
        self.reached()
        self.assignment = partitions
        ASSIGNED.set(len(partitions))
        log.info("assigned %s", [f"{p.topic}[{p.partition}]" for p in partitions])

    def on_revoke(self, consumer, partitions):
        # Each batch is committed before the next poll, so nothing is in hand here: what was
        # done is committed before the partitions move.
        self.assignment = []
        ASSIGNED.set(0)
        log.info("revoked %s", [f"{p.topic}[{p.partition}]" for p in partitions])

    def run(self):
        topic = self.settings["KAFKA_INPUT_TOPIC"]
        self.consumer.subscribe([topic], on_assign=self.on_assign, on_revoke=self.on_revoke)
        last_lag = 0.0
        while self.running:
            messages = self.consumer.consume(self.settings["STREAM_BATCH"], timeout=0.5)
            if messages:
                self.reached()
                self.process(messages)
            if time.monotonic() - last_lag > 5:
                self.measure_lag()
                last_lag = time.monotonic()
        self.consumer.close()  # leaves the group at once: its partitions move without a wait
        log.info("stopped")

    def process(self, messages):
        """Label a batch, produce every answer, wait for the broker's acks, then commit."""
        start = time.perf_counter()
        good, failures = [], []
        for message in messages:
            if message.error():
                if message.error().fatal():
                    raise KafkaException(message.error())
                log.warning("consume: %s", message.error())
                continue
            MESSAGES.labels("in").inc()
            try:
                good.append((message, *parse(message.value(), self.settings)))
            except Unlabelled as e:
                failures.append((message, e))
            except Exception as e:  # a bug must not stop the stream: this message to the errors
                log.error("unexpected error reading a message: %s", type(e).__name__)
                failures.append((message, Unlabelled("internal", 500, "an unexpected error")))
        served = self.models.get(self.name)
        good, answer = self.label(good, failures, served)
        version = served.version
        delivery = {"failed": []}

        def delivered(error, _):
            if error is not None:
                delivery["failed"].append(error)

        for n, (message, id_, _) in enumerate(good):
            value = {"id": id_, **answer[str(n)], "model": served.name, "model_version": version}
            self.producer.produce(
                self.settings["KAFKA_OUTPUT_TOPIC"], json.dumps(value).encode(),
                key=message.key(), headers=message.headers(), on_delivery=delivered,
            )  # fmt: skip
        for message, error in failures:
            headers = [
                *(message.headers() or []),
                ("error.kind", error.kind.encode()),
                ("error.status", str(error.status).encode()),
                ("error.detail", error.detail.encode("utf-8", "backslashreplace")),
            ]
            self.producer.produce(
                self.settings["KAFKA_ERROR_TOPIC"], message.value(), key=message.key(),
                headers=headers, on_delivery=delivered,
            )  # fmt: skip
        if self.producer.flush(30) or delivery["failed"]:
            # Not acknowledged: commit nothing, and stop; a restart takes the batch again.
            raise KafkaException(f"outputs not acknowledged: {delivery['failed'][:3]}")
        offsets = {}
        for message in messages:
            if not message.error():
                offsets[(message.topic(), message.partition())] = message.offset() + 1
        self.consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False
        )
        MESSAGES.labels("out").inc(len(good))
        MESSAGES.labels("error").inc(len(failures))
        seconds = time.perf_counter() - start
        BATCH_SECONDS.observe(seconds)
        if log.isEnabledFor(logging.INFO):
            fields = {
                "messages": len(messages),
                "labelled": len(good),
                "errors": len(failures),
                "latency_ms": round(seconds * 1000, 3),
            }
            sys.stderr.write(service.json_line("info", "stream batch", fields))

    def label(self, good, failures, served):
        """Label the batch's good messages in one call; if that fails, which only a bug can make
        it, each on its own, the ones that fail alone to the errors: no message stops the stream.
        Returns the messages labelled and their answers by position."""
        limits = {**self.settings, "MAX_TWEETS": max(1, len(good))}
        tweets = {str(n): text for n, (_, _, text) in enumerate(good)}
        try:
            return good, contract.predict(
                served.model, tweets, limits, scores=True
            ) if tweets else {}
        except Exception as e:
            log.error("a batch could not be labelled (%s): labelling each alone", type(e).__name__)
        kept, answer = [], {}
        for item in good:
            try:
                answer[str(len(kept))] = contract.predict(
                    served.model, {"0": item[2]}, limits, scores=True
                )["0"]
                kept.append(item)
            except Exception:
                failures.append((item[0], Unlabelled("internal", 500, "an unexpected error")))
        return kept, answer

    def measure_lag(self):
        lag = 0
        try:
            positions = self.consumer.position(self.assignment) if self.assignment else []
            for p in positions:
                _, high = self.consumer.get_watermark_offsets(p, timeout=2, cached=False)
                lag += max(0, high - p.offset) if p.offset >= 0 else high
        except KafkaException as e:
            log.warning("lag: %s", e)
            return
        LAG.set(lag)

    def stop(self, *_):
        self.running = False


def check(settings):
    """Exit 0 if the running processor reports that it is connected and assigned."""
    url = f"http://{settings['STREAM_METRICS_HOST']}:{settings['STREAM_METRICS_PORT']}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError as e:
        print(f"not running: {url}: {e}")
        return 1
    values = {}
    for line in text.splitlines():
        if line.startswith(("stream_connected ", "stream_assigned_partitions ")):
            name, value = line.split()
            values[name] = float(value)
    connected = values.get("stream_connected", 0) == 1
    assigned = int(values.get("stream_assigned_partitions", 0))
    print(f"connected: {'yes' if connected else 'no'}; partitions assigned: {assigned}")
    return 0 if connected and assigned else 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="probe the running processor")
    args = parser.parse_args(argv)
    settings = service.Settings.load(DEFAULTS)
    if args.check:
        return check(settings)
    service.setup_logging(log)
    processor = Processor(settings)
    port = service.serve_metrics(
        settings["STREAM_METRICS_HOST"], settings["STREAM_METRICS_PORT"], "STREAM_METRICS_PORT"
    )
    signal.signal(signal.SIGTERM, processor.stop)
    signal.signal(signal.SIGINT, processor.stop)
    served = processor.models.get(processor.name)
    log.info(
        "consuming %s from %s, model %s %s, metrics on %s:%s",
        settings["KAFKA_INPUT_TOPIC"],
        settings["KAFKA_BOOTSTRAP_SERVERS"],
        served.name,
        served.version,
        settings["STREAM_METRICS_HOST"],
        port,
    )
    processor.run()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, model.ArtifactError, KafkaException) as e:
        sys.exit(f"stream: {e}")
