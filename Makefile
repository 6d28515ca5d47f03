# Runnel: the two commands a user needs are `make run` and `make test`.
# Both install what the build needs on a fresh Debian machine first.

CARGO ?= cargo
BIN := $(shell $(CARGO) metadata --format-version 1 --no-deps 2>/dev/null | python3 -c 'import sys,json; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null || echo target)/release/runnel
# vagrant and ruby: tests/deploy.rs runs `vagrant validate` on the Vagrantfile.
# python3-kafka (kafka-python 2.0.2, what the Vagrant lab installs), golang-go
# and Sarama 1.22.1: tests/old_clients.rs runs them against the broker. The
# JDK: tests/java_client.rs compiles tests/java/RunnelCheck.java.
APT_PACKAGES := libclang-dev clang iproute2 openssl kcat rapidjson-dev vagrant ruby python3-kafka golang-go golang-github-shopify-sarama-dev openjdk-17-jdk-headless
PIP_PACKAGES := kafka-python==3.0.12 confluent-kafka

.PHONY: run build dist image test deps lint bench bench-suite librdkafka-suite chaos

run: deps dist
	$(DIST) serve $(ARGS)

build:
	$(CARGO) build --release --bin runnel

# The shipped binary: the release build stripped (the release profile
# keeps line tables for tests and benches, and RocksDB's C++ its debug
# info: 520 MB, against 27 MB stripped). `make run`, the Vagrant lab and the
# container image use it.
DIST := dist/runnel
dist: build
	@mkdir -p dist
	strip -o $(DIST).tmp $(BIN) && mv $(DIST).tmp $(DIST)
	@ls -l $(DIST)

# The container image, built offline FROM scratch (deploy/docker/build-image.sh).
image: dist
	bash deploy/docker/build-image.sh $(DIST)

# Everything CI runs as tests: unit and integration tests with real clients,
# then librdkafka's own test suite: its produce and idempotence lists against
# one node, its consumer-group list against a 3-node cluster.
test: deps
	$(CARGO) test --release
	LIBRDKAFKA_LISTS="produce idempotence" bash tests/librdkafka/run.sh $(BIN)
	LIBRDKAFKA_CLUSTER=3 bash tests/librdkafka/run.sh $(BIN)

deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@python3 -c 'import kafka, confluent_kafka' 2>/dev/null || python3 -m pip install --quiet $(PIP_PACKAGES)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --all-targets -- -D warnings

bench: build
	$(CARGO) bench --bench log_append
	$(CARGO) bench --bench load
	$(CARGO) bench --bench latency
	$(CARGO) bench --bench failover
	$(CARGO) bench --bench commits
	$(CARGO) bench --bench partitions
	$(CARGO) bench --bench cleaner
	$(CARGO) bench --bench legacy_formats

# The comparison suite (benches/suite.rs): ceilings of this machine, then the
# produce, end-to-end latency and backlog-consume workloads, warm-up plus
# SUITE_REPS (3) runs each; SUITE_SCALE=0.05 for a smoke run, SUITE_ONLY to pick.
bench-suite: build
	$(CARGO) bench --bench suite

# The fault suite (tests/chaos/, needs root): rdkafka producers and
# consumers against a 3-node cluster while a seeded nemesis kills, pauses
# and restarts nodes, damages a killed node's files, partitions the network
# and fills a node's log dir, then a check of the history. CHAOS_DURATION
# seconds of faults (CI's `cargo test` runs 240); CHAOS_SEED empty: random,
# printed; CHAOS_NEMESES: a comma list of kill_random, kill_leader,
# kill_controller, pause, restart_clean, rolling_restart, lost_unsynced,
# torn_write, partition_isolate, partition_leader, partition_bridge,
# disk_full, or `all`; empty: every kind. The history, summary.json and the node logs go to CHAOS_OUT
# (default: a fresh directory under the temp dir, printed); CHAOS_KEEP_DATA=1
# keeps the nodes' data dirs there too.
CHAOS_DURATION ?= 1800
CHAOS_SEED ?=
CHAOS_NEMESES ?=
chaos:
	CHAOS_DURATION=$(CHAOS_DURATION) CHAOS_SEED=$(CHAOS_SEED) CHAOS_NEMESES=$(CHAOS_NEMESES) \
		$(CARGO) test --release --test chaos
