#!/usr/bin/env bash
# Runs librdkafka's own test suite (the produce/fetch/metadata/offsets and
# consumer-group parts, see shared/COMPAT.md) against `runnel serve`: one
# node by default, or a cluster of N broker+controller nodes on loopback.
#
#   tests/librdkafka/run.sh [RUNNEL_BIN]      build if needed, then run
#   tests/librdkafka/run.sh --build-only       only build (and cache) the suite
#
# Environment:
#   RUNNEL_BIN        the broker binary (default: the release build)
#   LIBRDKAFKA_CLUSTER=N
#                     cluster mode: format and start N nodes on loopback
#                     (process.roles=broker,controller, one Raft quorum over
#                     all N, each node its own log.dirs), wait until every
#                     node's Metadata lists all N brokers, and run with
#                     bootstrap.servers listing all N. The default list is
#                     then the consumer-group list. Node logs are printed
#                     (and the work dir kept) when a test fails or a node
#                     dies. Default 1: one node, no controller.quorum.voters.
#   LIBRDKAFKA_LISTS  which of the named lists below to run: any of
#                     "produce groups idempotence" (default: all three on
#                     one node, "groups" in cluster mode)
#   LIBRDKAFKA_TESTS  space/comma separated test numbers to run instead of the
#                     lists (exclusions still apply)
#   LIBRDKAFKA_IDEMPOTENT=1
#                     force enable.idempotence=true on every producer the
#                     tests create (the runner's -P), and run the produce
#                     list plus 0090 instead of the default list (unless
#                     LIBRDKAFKA_TESTS or LIBRDKAFKA_LISTS is set)
#   LIBRDKAFKA_QUICK=0
#                     run the tests' full sub-test sets instead of the
#                     runner's quick mode (-Q), in which some tests (0018,
#                     for one) skip every sub-test not marked quick
#   LIBRDKAFKA_CACHE  where the built suite is kept (default /var/tmp/librdkafka-tests)
#   TEST_TIMEOUT      seconds allowed per test (default 600)
#   KEEP_WORK=1       keep the work dir (node data and logs) even on success
#
# The suite is built once per librdkafka version and cached, so CI runs on a
# fresh clone reuse it. Exits non-zero if any test fails.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

# The tests relevant to a broker without transactions or SASL (COMPAT.md:
# "produce, fetch, metadata, offsets", then "consumer groups and commits"
# but 0153, which skips itself for the classic protocol, then the
# idempotent producer, 0090).
produce_tests="0001 0002 0003 0005 0007 0008 0011 0012 0013 0014 0015 0017
0021 0022 0029 0031 0034 0035 0036 0038 0039 0041 0042 0048 0051 0053 0054
0057 0059 0063 0065 0067 0070 0073 0077 0082 0085 0110 0114 0125 0127"
group_tests="0018 0019 0020 0026 0030 0033 0040 0045 0050 0056 0060 0061 0064
0083 0084 0086 0089 0091 0093 0099 0118 0130 0132 0137 0140"
idempotence_tests="0090"
cluster_size="${LIBRDKAFKA_CLUSTER:-1}"
[[ "$cluster_size" =~ ^[1-9]$ ]] || { echo "LIBRDKAFKA_CLUSTER must be a node count 1-9, not '$cluster_size'" >&2; exit 2; }
idempotent="${LIBRDKAFKA_IDEMPOTENT:-0}"
runner_flags="-L -E -p1"
[[ "${LIBRDKAFKA_QUICK:-1}" == 1 ]] && runner_flags="$runner_flags -Q"
if [[ $idempotent == 1 ]]; then
    runner_flags="$runner_flags -P"
    default_lists="produce idempotence"
elif [[ $cluster_size -gt 1 ]]; then
    default_lists="groups"
else
    default_lists="produce groups idempotence"
fi
default_tests=""
for l in ${LIBRDKAFKA_LISTS:-$default_lists}; do
    case "$l" in
        produce) default_tests="$default_tests $produce_tests" ;;
        groups) default_tests="$default_tests $group_tests" ;;
        idempotence) default_tests="$default_tests $idempotence_tests" ;;
        *) echo "LIBRDKAFKA_LISTS: unknown list '$l' (produce, groups, idempotence)" >&2; exit 2 ;;
    esac
done

log() { echo "[librdkafka-suite] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

build_only=0
bin_arg=""
for arg in "$@"; do
    case "$arg" in
        --build-only) build_only=1 ;;
        -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
        *) bin_arg="$arg" ;;
    esac
done

# ---------------------------------------------------------------- build ----
src="$(ls -d "$HOME"/.cargo/registry/src/*/rdkafka-sys-4.*/librdkafka 2>/dev/null | sort -V | tail -n1 || true)"
if [[ -z "$src" ]]; then
    log "rdkafka-sys source not in the cargo registry; fetching it"
    (cd "$repo" && cargo fetch --quiet) || die "cargo fetch failed"
    src="$(ls -d "$HOME"/.cargo/registry/src/*/rdkafka-sys-4.*/librdkafka 2>/dev/null | sort -V | tail -n1 || true)"
    [[ -n "$src" ]] || die "no rdkafka-sys-4.* librdkafka source found under ~/.cargo/registry/src"
fi
version="$(basename "$(dirname "$src")")"          # e.g. rdkafka-sys-4.10.0+2.12.1
# The stats tests (0053, 0110) need RapidJSON at build time (Debian
# rapidjson-dev); without it they skip themselves. Key the cache on it so that
# installing it later triggers a rebuild instead of silently skipping.
if [[ -f /usr/include/rapidjson/schema.h ]]; then
    version="$version+rapidjson"
else
    log "WARNING: rapidjson-dev is not installed: the stats tests (0053, 0110) will be skipped"
fi
cache_root="${LIBRDKAFKA_CACHE:-/var/tmp/librdkafka-tests}"
tree="$cache_root/$version/librdkafka"
stamp="$cache_root/$version/.built"

build_suite() {
    mkdir -p "$cache_root/$version"
    # Two callers (say CI and a developer) must not build into one tree at once.
    exec 9>"$cache_root/$version/.lock"
    flock 9
    if [[ -f "$stamp" ]]; then
        return 0
    fi
    log "building librdkafka $version test suite in $tree (several minutes on 2 cores)"
    rm -rf "$tree"
    cp -a "$src" "$tree"
    chmod -R u+w "$tree"
    local jobs; jobs="$(nproc)"
    local blog="$cache_root/$version/build.log"
    : >"$blog"
    (
        cd "$tree"
        log "  configure"
        nice ./configure >>"$blog" 2>&1
        log "  make libs"
        nice make -j"$jobs" libs >>"$blog" 2>&1
        log "  make -C tests build"
        nice make -j"$jobs" -C tests build >>"$blog" 2>&1
    ) || { tail -n 40 "$blog" >&2; die "build failed, full log in $blog"; }
    [[ -x "$tree/tests/test-runner" ]] || die "build finished without tests/test-runner"
    touch "$stamp"
    log "built: $tree/tests/test-runner"
}

if [[ -f "$stamp" ]]; then
    log "using cached suite $tree"
else
    build_suite
fi
[[ $build_only == 1 ]] && exit 0

# ----------------------------------------------------------------- broker --
runnel="${bin_arg:-${RUNNEL_BIN:-}}"
if [[ -z "$runnel" ]]; then
    for c in "$repo/target/release/runnel" "${CARGO_TARGET_DIR:-/var/tmp/runnel-target}/release/runnel"; do
        if [[ -x "$c" ]]; then runnel="$c"; break; fi
    done
fi
[[ -n "$runnel" && -x "$runnel" ]] || die "runnel binary not found; pass it as an argument or set RUNNEL_BIN (cargo build --release)"
runnel="$(cd "$(dirname "$runnel")" && pwd)/$(basename "$runnel")"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work="$(mktemp -d "${TMPDIR:-/tmp}/runnel-librdkafka.XXXXXX")"
keep_work="${KEEP_WORK:-0}"
node_pids=()
node_ports=()
node_logs=()

print_node_logs() {
    local lines="${1:-60}"
    for i in "${!node_logs[@]}"; do
        echo "---- node $((i + 1)) log (${node_logs[$i]}), last $lines lines ----" >&2
        tail -n "$lines" "${node_logs[$i]}" >&2 || true
    done
}

cleanup() {
    for pid in "${node_pids[@]}"; do
        kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${node_pids[@]}"; do
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [[ $keep_work == 1 ]]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# The number of brokers in a Metadata (v1) response from 127.0.0.1:$1, or
# nothing if the node does not answer.
metadata_brokers() {
    python3 - "$1" <<'PY' 2>/dev/null || true
import socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
client = b"run.sh"
# Metadata v1, null topic array (= all topics).
body = struct.pack(">hhih", 3, 1, 7, len(client)) + client + struct.pack(">i", -1)
s.sendall(struct.pack(">i", len(body)) + body)
def read(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError
        b += c
    return b
(size,) = struct.unpack(">i", read(4))
resp = read(size)
(corr, n) = struct.unpack(">ii", resp[:8])
print(n)
PY
}

node_died() {
    for i in "${!node_pids[@]}"; do
        kill -0 "${node_pids[$i]}" 2>/dev/null || { echo "$((i + 1))"; return 0; }
    done
    return 1
}

if [[ $cluster_size == 1 ]]; then
    port="$(free_port)"
    node_ports=("$port")
    node_logs=("$work/runnel.log")
    log "starting $runnel on 127.0.0.1:$port (data in $work/data)"
    "$runnel" serve \
        --override "listeners=PLAINTEXT://127.0.0.1:$port" \
        --override "log.dirs=$work/data" \
        --override node.id=1 \
        --override num.partitions=4 \
        --override auto.create.topics.enable=true \
        2>"${node_logs[0]}" >&2 &
    node_pids=($!)
else
    ctl_ports=()
    for i in $(seq 1 "$cluster_size"); do
        node_ports+=("$(free_port)")
        ctl_ports+=("$(free_port)")
        node_logs+=("$work/node$i.log")
    done
    voters=""
    for i in $(seq 1 "$cluster_size"); do
        voters="$voters${voters:+,}$i@127.0.0.1:${ctl_ports[$((i - 1))]}"
    done
    cluster_id="$("$runnel" random-uuid)"
    node_args() {
        local i="$1"
        echo "--override node.id=$i"
        echo "--override process.roles=broker,controller"
        echo "--override listeners=PLAINTEXT://127.0.0.1:${node_ports[$((i - 1))]},CONTROLLER://127.0.0.1:${ctl_ports[$((i - 1))]}"
        echo "--override controller.quorum.voters=$voters"
        echo "--override log.dirs=$work/node$i/data"
        echo "--override num.partitions=4"
        echo "--override auto.create.topics.enable=true"
    }
    log "formatting $cluster_size nodes (cluster id $cluster_id), controller.quorum.voters=$voters"
    for i in $(seq 1 "$cluster_size"); do
        mkdir -p "$work/node$i"
        # shellcheck disable=SC2046 # one word per line by construction
        "$runnel" format --cluster-id="$cluster_id" $(node_args "$i") >"$work/node$i.format.log" 2>&1 \
            || { cat "$work/node$i.format.log" >&2; die "runnel format of node $i failed"; }
    done
    for i in $(seq 1 "$cluster_size"); do
        # shellcheck disable=SC2046
        "$runnel" serve $(node_args "$i") 2>"${node_logs[$((i - 1))]}" >&2 &
        node_pids+=($!)
        log "node $i: pid $!, kafka 127.0.0.1:${node_ports[$((i - 1))]}, controller 127.0.0.1:${ctl_ports[$((i - 1))]}"
    done
fi

# Ready once every node's Metadata lists every broker.
ready=0
for _ in $(seq 1 600); do
    if dead="$(node_died)"; then
        keep_work=1; print_node_logs 40; die "node $dead exited during startup"
    fi
    ready=1
    for p in "${node_ports[@]}"; do
        [[ "$(metadata_brokers "$p")" == "$cluster_size" ]] || { ready=0; break; }
    done
    [[ $ready == 1 ]] && break
    sleep 0.1
done
[[ $ready == 1 ]] || { keep_work=1; print_node_logs 40; die "not every node listed $cluster_size brokers within 60s"; }
bootstrap=""
for p in "${node_ports[@]}"; do bootstrap="$bootstrap${bootstrap:+,}127.0.0.1:$p"; done
log "$cluster_size node(s) serving, every one lists $cluster_size broker(s): bootstrap.servers=$bootstrap"
[[ $idempotent == 1 ]] && log "LIBRDKAFKA_IDEMPOTENT=1: every producer runs with enable.idempotence=true (-P)"

# ------------------------------------------------------------------ tests --
excluded="$(sed -e 's/#.*//' "$here/excluded.txt" 2>/dev/null | tr -s ' \t\n' ' ' || true)"
wanted="${LIBRDKAFKA_TESTS:-$default_tests}"
wanted="$(echo "$wanted" | tr ',' ' ')"
to_run=()
skipped=()
excluded_run=()
for t in $wanted; do
    if [[ " $excluded " == *" $t "* ]]; then skipped+=("$t"); excluded_run+=("$t"); else to_run+=("$t"); fi
done

# Our own test.conf (RDKAFKA_TEST_CONF), not the one in the shared tree, so
# that two runs at once do not point each other at the wrong brokers.
cat >"$work/test.conf" <<CONF
bootstrap.servers=$bootstrap
CONF

passed=()
failed=()
results="$work/results"
mkdir -p "$results"
per_test_timeout="${TEST_TIMEOUT:-600}"
n=0
for t in "${to_run[@]}"; do
    n=$((n + 1))
    log "[$n/${#to_run[@]}] test $t"
    start=$(date +%s)
    set +e
    # One test per run-test.sh invocation so that a hang or crash in one test
    # is attributed to it and does not take the rest down.
    # KAFKA_PATH/bin holds kafka-topics.sh and kafka-configs.sh shims over
    # runnel, for the tests that run Kafka's scripts (0077).
    (cd "$tree/tests" && RDKAFKA_TEST_CONF="$work/test.conf" TESTS="$t" TEST_KAFKA_VERSION=3.7.0 \
        KAFKA_PATH="$here/kafka" BROKERS="$bootstrap" RUNNEL_BIN="$runnel" timeout -k 10 "$per_test_timeout" \
        ./run-test.sh $runner_flags) >"$results/$t.log" 2>&1
    rc=$?
    set -e
    took=$(( $(date +%s) - start ))
    if dead="$(node_died)"; then
        keep_work=1
        tail -n 60 "$results/$t.log" >&2
        print_node_logs 60
        die "runnel node $dead died during test $t"
    fi
    # The summary table has one row per sub-test: "| 0053_stats | SKIPPED |".
    # A run where every sub-test skipped itself tested nothing.
    statuses="$(sed 's/\x1b\[[0-9;]*m//g' "$results/$t.log" | grep -E "^\| ${t}_" | awk -F'|' '{gsub(/ /, "", $3); print $3}' | sort -u | tr '\n' ' ' || true)"
    if [[ $rc == 0 && "$statuses" != *PASSED* ]]; then
        skipped+=("$t")
        log "    SKIPPED by the suite itself:"
        sed 's/\x1b\[[0-9;]*m//g' "$results/$t.log" | grep -E "^\| ${t}_.*SKIPPED" | sed 's/^/      /' >&2 || true
    elif [[ $rc == 0 ]]; then
        passed+=("$t"); log "    PASS ($took s)"
    else
        failed+=("$t")
        if [[ $rc == 124 || $rc == 137 ]]; then log "    FAIL: timed out after $per_test_timeout s"; else log "    FAIL (rc $rc, $took s)"; fi
        # The lines that say why: the test's own failure report, and what it
        # was doing just before.
        sed 's/\x1b\[[0-9;]*m//g' "$results/$t.log" | grep -v '^%7' \
            | grep -E -B4 -A2 '^### Test ".*" failed at|Test assertion failed' \
            | head -n 24 | cut -c1-300 | sed 's/^/      /' >&2 || true
    fi
done

echo
where="one node"
[[ $cluster_size -gt 1 ]] && where="a $cluster_size-node cluster"
if [[ $idempotent == 1 ]]; then
    echo "librdkafka suite against runnel ($where), idempotent producers forced on (-P) (skipped = excluded here, or skipped by the suite itself):"
else
    echo "librdkafka suite against runnel ($where) (skipped = excluded here, or skipped by the suite itself):"
fi
echo "librdkafka: ${#passed[@]} passed, ${#failed[@]} failed, ${#skipped[@]} skipped"
[[ ${#failed[@]} -gt 0 ]] && echo "failed:   ${failed[*]}"
[[ ${#excluded_run[@]} -gt 0 ]] && echo "excluded: ${excluded_run[*]} (see tests/librdkafka/excluded.txt)"
[[ ${#skipped[@]} -gt ${#excluded_run[@]} ]] && echo "skipped:  ${skipped[*]}"
last="$cache_root/last-run"
[[ $cluster_size -gt 1 ]] && last="$cache_root/last-run-cluster$cluster_size"
rm -rf "$last"
mkdir -p "$last"
cp "$results"/*.log "${node_logs[@]}" "$last/" 2>/dev/null || true
echo "per-test logs and the node logs: $last/"
if [[ ${#failed[@]} -gt 0 ]]; then
    if [[ $cluster_size -gt 1 ]]; then
        keep_work=1
        print_node_logs 30
    fi
    exit 1
fi
exit 0
