#!/usr/bin/env bash
# kafka-configs.sh as librdkafka's tests call it ($KAFKA_PATH/bin/...): the
# same flags, served by `runnel configs`. run.sh sets RUNNEL_BIN.
exec "${RUNNEL_BIN:?RUNNEL_BIN must name the runnel binary}" configs "$@"
