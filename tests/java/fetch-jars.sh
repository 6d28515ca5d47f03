#!/usr/bin/env bash
# Fetches the Java Kafka client for tests/java/RunnelCheck.java and prints
# its classpath (colon-separated absolute paths) on stdout.
#
# There is no Maven repository here, so the jars come from a PyPI wheel that
# bundles them: shigawire-apache-flink-libraries 2.0.0.post1 ships Apache
# kafka-clients 3.9.1 with the jars it needs at run time (lz4-java,
# snappy-java, zstd-jni for the codecs, slf4j-api for logging). The wheel and
# every jar are pinned by SHA-256; only those five jars are kept (the wheel
# is 92 MB, the jars 19 MB).
#
# Usage: tests/java/fetch-jars.sh [CACHE_DIR]
#   CACHE_DIR defaults to $RUNNEL_JAVA_JARS, else /var/tmp/runnel-java-jars.
#   A cache that already holds every jar with its pinned hash is reused
#   without touching the network. Quiet on success; on failure, a message
#   on stderr (with pip's output) and a non-zero exit.
set -euo pipefail

WHEEL_REQ=shigawire-apache-flink-libraries==2.0.0.post1
WHEEL_FILE=shigawire_apache_flink_libraries-2.0.0.post1-py3-none-any.whl
WHEEL_SHA256=aaa65537d3f0c0ff279185d8243024f0efd95788ba044bf249ba0f40b69289cd

# cache name | path inside the wheel | sha256
JARS="
kafka-clients-3.9.1.jar|pyflink/lib/kafka-clients.jar|7568b998572d256f0b7bc0afdc1b7a2588b8b08415c62ce314c864a6851ae9d9
lz4-java-1.8.0.jar|pyflink/lib/lz4-java.jar|d74a3334fb35195009b338a951f918203d6bbca3d1d359033dc33edd1cadc9ef
snappy-java-1.1.10.7.jar|pyflink/lib/snappy-java.jar|4c766cb3f855415ee734b2392949a0b6f12a60879334a74518deaf6270d32e36
zstd-jni-1.5.6-4.jar|pyflink/lib/zstd-jni.jar|793ca8734aa15687e7e64564eab8b6ae9ee2720eae27aa663074682144b1c386
slf4j-api-1.7.36.jar|pyflink/lib/slf4j-api.jar|d3ef575e3e4979678dc01bf1dcce51021493b4d11fb7f1be8ad982877c16a1c0
"

CACHE=${1:-${RUNNEL_JAVA_JARS:-/var/tmp/runnel-java-jars}}
PYTHON=${PYTHON:-python3}

die() {
    echo "fetch-jars.sh: $*" >&2
    exit 1
}

for tool in sha256sum unzip flock "$PYTHON"; do
    command -v "$tool" >/dev/null 2>&1 || die "needs $tool on PATH"
done

sha_of() {
    sha256sum "$1" | cut -d' ' -f1
}

# True when every jar is in the cache with its pinned hash.
complete() {
    local name path sha
    while IFS='|' read -r name path sha; do
        [ -n "$name" ] || continue
        [ -f "$CACHE/$name" ] && [ "$(sha_of "$CACHE/$name")" = "$sha" ] || return 1
    done <<<"$JARS"
}

classpath() {
    local name path sha cp=""
    while IFS='|' read -r name path sha; do
        [ -n "$name" ] || continue
        cp="${cp:+$cp:}$CACHE/$name"
    done <<<"$JARS"
    echo "$cp"
}

mkdir -p "$CACHE" || die "cannot create the cache directory $CACHE"
CACHE=$(cd "$CACHE" && pwd)

# One fetch at a time per cache (tests may run this concurrently).
exec 9>"$CACHE/.lock"
flock 9

if ! complete; then
    work=$(mktemp -d "$CACHE/.fetch.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    if ! "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
        --only-binary=:all: "$WHEEL_REQ" -d "$work" >"$work/pip.log" 2>&1; then
        cat "$work/pip.log" >&2
        die "pip download $WHEEL_REQ failed (output above)"
    fi
    wheel="$work/$WHEEL_FILE"
    [ -f "$wheel" ] || die "pip did not produce $WHEEL_FILE (got: $(ls "$work"))"
    got=$(sha_of "$wheel")
    [ "$got" = "$WHEEL_SHA256" ] || die "$WHEEL_FILE has sha256 $got, expected $WHEEL_SHA256"
    while IFS='|' read -r name path sha; do
        [ -n "$name" ] || continue
        unzip -p "$wheel" "$path" >"$work/$name" 2>"$work/unzip.log" ||
            die "$path is not in $WHEEL_FILE: $(cat "$work/unzip.log")"
        got=$(sha_of "$work/$name")
        [ "$got" = "$sha" ] || die "$path in the wheel has sha256 $got, expected $sha"
    done <<<"$JARS"
    # Each jar lands by rename, so a reader never sees half a file.
    while IFS='|' read -r name path sha; do
        [ -n "$name" ] || continue
        mv -f "$work/$name" "$CACHE/$name"
    done <<<"$JARS"
    complete || die "the jars in $CACHE do not match their hashes after the fetch"
fi

classpath
