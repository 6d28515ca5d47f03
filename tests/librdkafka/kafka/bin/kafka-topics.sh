#!/usr/bin/env bash
# kafka-topics.sh as librdkafka's tests call it ($KAFKA_PATH/bin/...): the
# same flags, served by `runnel topics`. run.sh sets RUNNEL_BIN.
exec "${RUNNEL_BIN:?RUNNEL_BIN must name the runnel binary}" topics "$@"
