#!/usr/bin/env bash
# The flow worker: `pipetwin run` configured from the environment (see docker/.env.example).
# Reads the readings from Kafka (KAFKA_BOOTSTRAP, KAFKA_TOPIC) or, with KAFKA_BOOTSTRAP empty, an
# already running field (OPC-UA and Modbus servers at PIPETWIN_FIELD_HOST, the simulator in the
# compose file), and writes to the Redis at REDIS_URL and the Parquet historian.
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
# Kafka: with KAFKA_BOOTSTRAP the flow reads its readings from KAFKA_TOPIC (comma-separated for
# several), published from the end on; the field servers and the meter inbox are then not read.
if [ -n "${KAFKA_BOOTSTRAP:-}" ]; then
    args+=(--kafka "$KAFKA_BOOTSTRAP")
    IFS=',' read -r -a topics <<<"${KAFKA_TOPIC:-pipetwin.readings}"
    for topic in "${topics[@]}"; do
        topic="${topic//[[:space:]]/}"
        if [ -n "$topic" ]; then
            args+=(--kafka-topic "$topic")
        fi
    done
fi
# Scale: PIPETWIN_WORKERS bytewax workers in this container; PIPETWIN_ADDRESSES ("h:p;h:p", the
# same on every process) and PIPETWIN_PROCESS_ID make it one process of a cluster (needs Kafka and
# REDIS_URL; `pipetwin run` checks).
if [ -n "${PIPETWIN_WORKERS:-}" ] && [ "${PIPETWIN_WORKERS}" != "1" ]; then
    args+=(--workers "$PIPETWIN_WORKERS")
fi
if [ -n "${PIPETWIN_ADDRESSES:-}" ]; then
    args+=(--addresses "$PIPETWIN_ADDRESSES" --process-id "${PIPETWIN_PROCESS_ID:-0}")
fi

echo "pipetwin-flow: pipetwin ${args[*]}" >&2
exec pipetwin "${args[@]}" "$@"
