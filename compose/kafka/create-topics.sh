#!/usr/bin/env bash
# Create skinbatch's three topics with their partitions, retention and size limits; on a topic that
# already exists, apply the retention and size limits again (partitions only ever grow: docs/runbook.md).
# Runs in the apache/kafka image (the kafka-init service); every setting comes from the environment.
set -euo pipefail

bin=${KAFKA_BIN:-/opt/kafka/bin}
bootstrap=${BOOTSTRAP_SERVERS:?BOOTSTRAP_SERVERS is not set}
replication=${REPLICATION_FACTOR:-1}
# Kafka's default record limit; results and dead letters are small JSON documents.
small=1048576

topic() {
  local name=$1 partitions=$2 retention_ms=$3 max_bytes=$4
  "$bin/kafka-topics.sh" --bootstrap-server "$bootstrap" --create --if-not-exists \
    --topic "$name" --partitions "$partitions" --replication-factor "$replication" \
    --config "retention.ms=$retention_ms" --config "max.message.bytes=$max_bytes" \
    --config "min.insync.replicas=$(( replication > 1 ? 2 : 1 ))"
  "$bin/kafka-configs.sh" --bootstrap-server "$bootstrap" --alter --entity-type topics \
    --entity-name "$name" --add-config "retention.ms=$retention_ms,max.message.bytes=$max_bytes"
}

topic "${REQUEST_TOPIC:?}" "${REQUEST_PARTITIONS:?}" "${REQUEST_RETENTION_MS:?}" "${REQUEST_MAX_MESSAGE_BYTES:?}"
topic "${RESULT_TOPIC:?}" "${RESULT_PARTITIONS:?}" "${RESULT_RETENTION_MS:?}" "$small"
topic "${DEAD_LETTER_TOPIC:?}" "${DEAD_LETTER_PARTITIONS:?}" "${DEAD_LETTER_RETENTION_MS:?}" "$small"
"$bin/kafka-topics.sh" --bootstrap-server "$bootstrap" --describe \
  --topic "$REQUEST_TOPIC" --topic "$RESULT_TOPIC" --topic "$DEAD_LETTER_TOPIC" >&2 || true
echo "topics ready: $REQUEST_TOPIC ($REQUEST_PARTITIONS), $RESULT_TOPIC ($RESULT_PARTITIONS), $DEAD_LETTER_TOPIC ($DEAD_LETTER_PARTITIONS)"
