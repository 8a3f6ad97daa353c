"""Check docker/docker-compose.yml without a Docker engine: the rules STYLE.md sets for it, and
Compose's own parser when a Compose client is on the PATH.

    .venv/bin/python docker/check_compose.py            # exit 0: fine; 1: problems printed

Checks: every published port is bound to 127.0.0.1; every ${VARIABLE} the compose file reads is
in .env.example; every service has an image or a build; ``docker compose config`` (Compose v2)
or ``docker-compose config`` (v1), when present, accepts the file with .env.example.
``problems()`` is importable for a test.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
COMPOSE = HERE / "docker-compose.yml"
ENV_EXAMPLE = HERE / ".env.example"


def env_names(path: Path = ENV_EXAMPLE) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.strip().lstrip("# ").strip()
        m = re.match(r"([A-Z][A-Z0-9_]*)=", line)
        if m:
            names.add(m.group(1))
    return names


def _published(port) -> tuple[str | None, str]:
    """(host ip or None, text) of a ports entry, short or long syntax."""
    if isinstance(port, dict):
        return port.get("host_ip"), str(port)
    text = str(port)   # HOST_IP:HOST_PORT:CONTAINER_PORT, HOST_PORT:CONTAINER_PORT or CONTAINER_PORT
    host_ip = text.split(":", 1)[0] if text.count(":") >= 2 and not text.startswith("$") else None
    return host_ip, text


def compose_clients() -> list[list[str]]:
    found = []
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            found.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        found.append(["docker-compose"])
    return found


def problems(compose: Path = COMPOSE, env_example: Path = ENV_EXAMPLE, run_clients: bool = True) -> list[str]:
    out = []
    text = compose.read_text()
    doc = yaml.safe_load(text)
    services = doc.get("services", {})
    if not services:
        out.append("no services")
    for name, svc in services.items():
        if "image" not in svc and "build" not in svc:
            out.append(f"{name}: neither image nor build")
        for port in svc.get("ports", []) or []:
            host_ip, shown = _published(port)
            if host_ip != "127.0.0.1":
                out.append(f"{name}: port {shown} is not bound to 127.0.0.1")
    known = env_names(env_example)
    live = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    for var in sorted(set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", live))):
        if var not in known:
            out.append(f"${{{var}}} is read by {compose.name} but not in {env_example.name}")
    if run_clients:
        for client in compose_clients():
            run = subprocess.run([*client, "--env-file", str(env_example), "-f", str(compose), "config", "--quiet"],
                                 capture_output=True, text=True)
            if run.returncode != 0:
                out.append(f"{' '.join(client)} config: {run.stderr.strip() or run.stdout.strip()}")
    return out


def main() -> int:
    found = problems()
    clients = [" ".join(c) for c in compose_clients()]
    for p in found:
        print(f"problem: {p}")
    print(f"compose_clients={','.join(clients) or 'none'}")
    print(f"problems={len(found)}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
