#!/usr/bin/env bash
# Builds the Runnel image offline: the runtime layout of
# deploy/docker/Dockerfile, FROM scratch, from a binary built on this
# machine (no base image, no registry).
#
#   deploy/docker/build-image.sh [BINARY] [TAG]
#
# BINARY: dist/runnel if it exists, else /var/tmp/runnel-target/release/runnel
#         (`make build`). It is stripped into the image; the original is
#         left alone.
# TAG:    runnel:latest.
#
# The image holds the stripped binary at /usr/local/bin/runnel, every shared
# library ldd lists for it at the same path plus the dynamic loader (so the
# binary must have been built against this machine's glibc: build it here),
# /etc/passwd and /etc/group with the user runnel (uid and gid 1000),
# /etc/nsswitch.conf (hosts: files dns; Debian 12's glibc has both built in,
# so no libnss_* is needed), /tmp, and /var/lib/runnel owned by runnel. It
# runs as runnel, with /var/lib/runnel as its volume. It prints the image
# size at the end.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

if [ -n "${1:-}" ]; then
    binary=$1
elif [ -e "$root/dist/runnel" ]; then
    binary=$root/dist/runnel
else
    binary=/var/tmp/runnel-target/release/runnel
fi
tag=${2:-runnel:latest}
uid=1000
gid=1000

die() { echo "build-image.sh: $*" >&2; exit 1; }

[ -f "$binary" ] || die "no binary at $binary (build one with 'make build', or pass its path)"
command -v docker >/dev/null || die "docker is not installed"
command -v ldd >/dev/null || die "ldd is not installed (it lists the libraries to copy)"
docker info >/dev/null 2>&1 || die "cannot talk to the Docker daemon (docker info fails)"

work=$(mktemp -d "${TMPDIR:-/tmp}/runnel-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
ctx=$work/context
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/var/lib/runnel" "$ctx"

# The binary, stripped (a binary that is already stripped comes out the
# same). objcopy --strip-debug if strip fails on it.
out=$rootfs/usr/local/bin/runnel
if ! strip --strip-all -o "$out" "$binary" 2>"$work/strip.err"; then
    echo "strip failed ($(cat "$work/strip.err")); trying objcopy --strip-debug" >&2
    objcopy --strip-debug "$binary" "$out"
fi
chmod 0755 "$out"

# Its shared libraries, at the paths the loader found them (ldd), and the
# loader itself. The loader searches /lib/x86_64-linux-gnu and
# /usr/lib/x86_64-linux-gnu without an ld.so.cache, which covers what ldd
# prints on Debian.
if ldd_out=$(ldd "$binary" 2>&1); then
    if grep -q 'not found' <<<"$ldd_out"; then
        die "ldd $binary: a library is missing on this machine:"$'\n'"$ldd_out"
    fi
    libs=$(awk '$2 == "=>" && $3 ~ /^\// { print $3; next } $1 ~ /^\// { print $1 }' <<<"$ldd_out")
    loader=/lib64/ld-linux-x86-64.so.2
    if [ -e "$loader" ]; then
        libs+=$'\n'"$loader"
    fi
else
    # A static binary needs nothing else.
    grep -q 'not a dynamic executable' <<<"$ldd_out" || die "ldd $binary: $ldd_out"
    libs=
fi
libs=$(sort -u <<<"$libs" | sed '/^$/d')
while read -r lib; do
    [ -n "$lib" ] || continue
    mkdir -p "$rootfs$(dirname "$lib")"
    # -L: the file, not the symlink (e.g. libstdc++.so.6 -> libstdc++.so.6.0.30).
    cp -L "$lib" "$rootfs$lib"
done <<<"$libs"

cat >"$rootfs/etc/passwd" <<EOF
root:x:0:0:root:/root:/sbin/nologin
runnel:x:$uid:$gid:Runnel:/var/lib/runnel:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
EOF
cat >"$rootfs/etc/group" <<EOF
root:x:0:
runnel:x:$gid:
nogroup:x:65534:
EOF
cat >"$rootfs/etc/nsswitch.conf" <<EOF
passwd: files
group: files
hosts: files dns
EOF

# mktemp -d made the root 0700: it becomes the image's /.
find "$rootfs" -type d -exec chmod 0755 {} +
chmod 1777 "$rootfs/tmp"
chmod 0644 "$rootfs"/etc/*

# Everything owned by root except /var/lib/runnel (ADD keeps tar owners).
tar -C "$rootfs" --numeric-owner --owner=0 --group=0 --exclude=./var/lib/runnel \
    -cf "$ctx/rootfs.tar" .
tar -C "$rootfs" --numeric-owner --owner="$uid" --group="$gid" --no-recursion \
    -rf "$ctx/rootfs.tar" ./var/lib/runnel
cp "$here/Dockerfile.scratch" "$ctx/Dockerfile"

version=$("$out" --version 2>/dev/null || echo unknown)
echo "building $tag from $binary ($version), libraries: $(tr '\n' ' ' <<<"$libs")"
docker build --label "org.opencontainers.image.title=runnel" \
    --label "org.opencontainers.image.version=${version#runnel }" \
    -t "$tag" "$ctx"

binary_bytes=$(stat -c %s "$out")
image_bytes=$(docker image inspect -f '{{.Size}}' "$tag")
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1000000 }'; }
echo "stripped binary: $binary_bytes bytes ($(mb "$binary_bytes"))"
echo "image $tag: $image_bytes bytes ($(mb "$image_bytes"))"
