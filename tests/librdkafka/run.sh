#!/usr/bin/env bash
# Runs librdkafka's own test suite (the produce/fetch/metadata/offsets and
# consumer-group parts, see shared/COMPAT.md) against a single-node `runnel serve`.
#
#   tests/librdkafka/run.sh [RUNNEL_BIN]      build if needed, then run
#   tests/librdkafka/run.sh --build-only       only build (and cache) the suite
#
# Environment:
#   RUNNEL_BIN        the broker binary (default: the release build)
#   LIBRDKAFKA_TESTS  space/comma separated test numbers to run instead of the
#                     default list (exclusions still apply)
#   LIBRDKAFKA_IDEMPOTENT=1
#                     force enable.idempotence=true on every producer the
#                     tests create (the runner's -P), and run the produce
#                     list plus 0090 instead of the default list (unless
#                     LIBRDKAFKA_TESTS is set)
#   LIBRDKAFKA_CACHE  where the built suite is kept (default /var/tmp/librdkafka-tests)
#   TEST_TIMEOUT      seconds allowed per test (default 600)
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
0057 0059 0063 0065 0067 0070 0073 0082 0085 0110 0114 0125 0127"
group_tests="0018 0019 0020 0026 0030 0033 0040 0045 0050 0056 0060 0061 0064
0083 0084 0086 0089 0091 0093 0099 0118 0130 0132 0137 0140"
idempotence_tests="0090"
default_tests="$produce_tests
$group_tests
$idempotence_tests"
idempotent="${LIBRDKAFKA_IDEMPOTENT:-0}"
runner_flags="-L -E -Q -p1"
if [[ $idempotent == 1 ]]; then
    default_tests="$produce_tests $idempotence_tests"
    runner_flags="$runner_flags -P"
fi

log() { echo "[librdkafka-suite] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

build_only=0
bin_arg=""
for arg in "$@"; do
    case "$arg" in
        --build-only) build_only=1 ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
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

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
work="$(mktemp -d "${TMPDIR:-/tmp}/runnel-librdkafka.XXXXXX")"
broker_log="$work/runnel.log"
broker_pid=""

cleanup() {
    if [[ -n "$broker_pid" ]] && kill -0 "$broker_pid" 2>/dev/null; then
        kill -TERM "$broker_pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$broker_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$broker_pid" 2>/dev/null || true
    fi
    if [[ "${KEEP_WORK:-0}" == 1 ]]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

log "starting $runnel on 127.0.0.1:$port (data in $work/data)"
"$runnel" serve \
    --override "listeners=PLAINTEXT://127.0.0.1:$port" \
    --override "log.dirs=$work/data" \
    --override node.id=1 \
    --override num.partitions=4 \
    --override auto.create.topics.enable=true \
    2>"$broker_log" >&2 &
broker_pid=$!

ready=0
for _ in $(seq 1 300); do
    kill -0 "$broker_pid" 2>/dev/null || { tail -n 40 "$broker_log" >&2; die "runnel exited during startup"; }
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then ready=1; break; fi
    sleep 0.1
done
[[ $ready == 1 ]] || { tail -n 40 "$broker_log" >&2; die "runnel did not listen on $port within 30s"; }
log "broker is listening"
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

cat >"$tree/tests/test.conf" <<CONF
bootstrap.servers=127.0.0.1:$port
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
    (cd "$tree/tests" && TESTS="$t" TEST_KAFKA_VERSION=3.7.0 timeout -k 10 "$per_test_timeout" \
        ./run-test.sh $runner_flags) >"$results/$t.log" 2>&1
    rc=$?
    set -e
    took=$(( $(date +%s) - start ))
    if ! kill -0 "$broker_pid" 2>/dev/null; then
        tail -n 60 "$results/$t.log" >&2
        tail -n 60 "$broker_log" >&2
        die "runnel died during test $t"
    fi
    # The summary table has one row per sub-test: "| 0053_stats | SKIPPED |".
    # A run where every sub-test skipped itself tested nothing.
    statuses="$(sed 's/\x1b\[[0-9;]*m//g' "$results/$t.log" | grep -E "^\| ${t}_" | awk -F'|' '{gsub(/ /, "", $3); print $3}' | sort -u | tr '\n' ' ')"
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
if [[ $idempotent == 1 ]]; then
    echo "librdkafka suite against runnel, idempotent producers forced on (-P) (skipped = excluded here, or skipped by the suite itself):"
else
    echo "librdkafka suite against runnel (skipped = excluded here, or skipped by the suite itself):"
fi
echo "librdkafka: ${#passed[@]} passed, ${#failed[@]} failed, ${#skipped[@]} skipped"
[[ ${#failed[@]} -gt 0 ]] && echo "failed:   ${failed[*]}"
[[ ${#excluded_run[@]} -gt 0 ]] && echo "excluded: ${excluded_run[*]} (see tests/librdkafka/excluded.txt)"
[[ ${#skipped[@]} -gt ${#excluded_run[@]} ]] && echo "skipped:  ${skipped[*]}"
rm -rf "$cache_root/last-run"
mkdir -p "$cache_root/last-run"
cp "$results"/*.log "$broker_log" "$cache_root/last-run/" 2>/dev/null || true
echo "per-test logs and the broker's log: $cache_root/last-run/"
if [[ ${#failed[@]} -gt 0 ]]; then
    exit 1
fi
exit 0
