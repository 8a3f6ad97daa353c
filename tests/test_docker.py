"""docker/ without a Docker engine: the compose file keeps its rules (docker/check_compose.py), the
commands it gives the simulator and the flow are ones pipetwin's parser accepts with the defaults
filled in, and the flow's entrypoint really starts ``pipetwin run --kafka`` on a real broker
(tests/kafka_broker.py) from the environment the compose file sets."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.kafka_broker import delete_topic, kafka_broker, new_topic  # noqa: F401  (kafka_broker: a fixture)

DOCKER = Path(__file__).resolve().parents[1] / "docker"


def _defaults(value: str) -> str:
    """``${VAR:-default}`` / ``${VAR-default}`` as Compose fills them with VAR unset."""
    return re.sub(r"\$\{[A-Z][A-Z0-9_]*:?-([^}]*)\}", r"\1", value)


def _compose() -> dict:
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text())


def test_compose_file_keeps_its_rules():
    sys.path.insert(0, str(DOCKER))
    try:
        import check_compose
    finally:
        sys.path.remove(str(DOCKER))
    assert check_compose.problems() == []


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="Debian's docker-compose is not installed")
@pytest.mark.parametrize("env_file", [None, ".env.example"])
def test_compose_file_is_valid_for_docker_compose(env_file, tmp_path):
    """Compose's own validation (``docker-compose config``, Debian's docker-compose, no engine
    needed): the schema, the variable substitution, the build contexts and depends_on."""
    cmd = ["docker-compose", "--project-directory", str(DOCKER), "-f", str(DOCKER / "docker-compose.yml")]
    if env_file:
        cmd += ["--env-file", str(DOCKER / env_file)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "PIPETWIN_", "REDIS_"))}
    done = subprocess.run([*cmd, "config"], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    assert {"redis", "kafka", "simulator", "flow", "dashboard"} <= set(config["services"])


def test_simulator_command_parses_and_publishes_to_kafka():
    from pipetwin.cli import build_parser

    services = _compose()["services"]
    command = [_defaults(str(part)) for part in services["simulator"]["command"]]
    assert command[0] == "pipetwin"
    args = build_parser().parse_args(command[1:])
    assert args.func.__name__ == "cmd_simulate"
    flow_env = {k: _defaults(str(v)) for k, v in services["flow"]["environment"].items()}
    assert args.kafka == flow_env["KAFKA_BOOTSTRAP"] == "kafka:19092"
    assert args.kafka_topic == flow_env["KAFKA_TOPIC"]
    assert args.start == "now"                  # a live clock: the flow's gate takes the readings as current
    assert args.kafka_partitions == int(_defaults(services["kafka-topics"]["environment"]["KAFKA_PARTITIONS"]))
    assert "kafka-topics" in services["simulator"]["depends_on"]


def test_entrypoint_runs_the_flow_on_kafka(kafka_broker, tmp_path):
    topic = new_topic(kafka_broker, 2)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "PIPETWIN_", "REDIS_"))}
    env.update(PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}", KAFKA_BOOTSTRAP=kafka_broker,
               KAFKA_TOPIC=f" {topic} ", PIPETWIN_DURATION="2", PIPETWIN_WORKERS="2", PIPETWIN_HISTORIAN=str(tmp_path / "historian"))
    try:
        res = subprocess.run(["bash", str(DOCKER / "flow-entrypoint.sh")], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=180)
    finally:
        delete_topic(kafka_broker, topic)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "--no-simulator --no-dashboard" in res.stderr
    assert f"--kafka {kafka_broker} --kafka-topic {topic} --workers 2" in res.stderr
    assert f"kafka {kafka_broker} topic={topic} partitions=2" in res.stdout
    assert "kafka_errors=0" in res.stdout
    assert "embedded Redis" in res.stderr          # REDIS_URL unset: it says so
