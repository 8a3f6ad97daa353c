#!/usr/bin/env bash
# The flow worker: `pipetwin run` configured from the environment (see docker/.env.example).
# Reads an already running field (OPC-UA and Modbus servers at PIPETWIN_FIELD_HOST, the
# simulator in the compose file) and writes to the Redis at REDIS_URL and the Parquet historian.
set -euo pipefail

network="${PIPETWIN_NETWORK:-schutterwald}"
args=(run "$network" --no-simulator --no-dashboard --quiet
      --historian "${PIPETWIN_HISTORIAN:-/data/historian}"
      --opcua-port "${PIPETWIN_OPCUA_PORT:-4840}"
      --modbus-port "${PIPETWIN_MODBUS_PORT:-5020}")
if [ -n "${PIPETWIN_POINTS:-}" ]; then
    args+=(--points "$PIPETWIN_POINTS")
fi
if [ -n "${REDIS_URL:-}" ]; then
    args+=(--redis-url "$REDIS_URL")
else
    echo "pipetwin-flow: REDIS_URL is not set; the flow starts its own embedded Redis (lost with the container)" >&2
fi
if [ -n "${PIPETWIN_DURATION:-}" ]; then
    args+=(--duration "$PIPETWIN_DURATION")
fi

help="$(pipetwin run --help)"
if [ -n "${PIPETWIN_FIELD_HOST:-}" ] && [ "${PIPETWIN_FIELD_HOST}" != "127.0.0.1" ]; then
    if grep -q -- "--host" <<<"$help"; then
        args+=(--host "$PIPETWIN_FIELD_HOST")
    else
        echo "pipetwin-flow: PIPETWIN_FIELD_HOST=$PIPETWIN_FIELD_HOST ignored: this pipetwin's 'run' has no --host" \
             "(it reads 127.0.0.1; the compose file shares the simulator's network namespace for that)" >&2
    fi
fi
# Kafka: the flow reads Reading batches from KAFKA_TOPIC when `pipetwin run` has a --kafka option
# (connectors/kafka.py has the source); until then the variables are reported and not used.
if [ -n "${KAFKA_BOOTSTRAP:-}" ]; then
    if grep -q -- "--kafka" <<<"$help"; then
        args+=(--kafka "$KAFKA_BOOTSTRAP" --kafka-topic "${KAFKA_TOPIC:-pipetwin.readings}")
    else
        echo "pipetwin-flow: KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP not used: this pipetwin's 'run' has no --kafka yet" >&2
    fi
fi

echo "pipetwin-flow: pipetwin ${args[*]}" >&2
exec pipetwin "${args[@]}" "$@"
