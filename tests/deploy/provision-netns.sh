#!/usr/bin/env bash
# tests/deploy/provision-netns.sh --binary PATH [--keep]
#
# deploy/provision.sh without VMs: three network namespaces stand in for
# the Vagrant lab's node1..node3 (10.77.0.11-13 on a bridge, names from
# /etc/netns/NAME/hosts, which `ip netns exec` mounts over /etc/hosts).
# Each node is installed with `provision.sh --no-systemd --prefix DIR`,
# then the Kafka lab's commands run against it with the runnel CLI, each
# result checked. Needs root and iproute2. Removes every namespace, file
# and process it made on exit, failed or not (--keep leaves the work dir).
# tests/deploy.rs runs it.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
binary="" keep=0
while (($#)); do
    case $1 in
    --binary)
        binary=$2
        shift
        ;;
    --keep) keep=1 ;;
    *)
        echo "usage: $0 --binary PATH [--keep]" >&2
        exit 2
        ;;
    esac
    shift
done

started=$SECONDS
step() { printf '[%3ds] %s\n' $((SECONDS - started)) "$*"; }
fail() {
    printf '[%3ds] FAILED: %s\n' $((SECONDS - started)) "$*" >&2
    exit 1
}

[[ -x $binary ]] || fail "--binary PATH: the runnel binary to install (got '$binary')"
((EUID == 0)) || fail "needs root (network namespaces)"
command -v ip >/dev/null || fail "needs ip (iproute2)"

# Unique per run: the namespaces and their /etc/netns entries. Interface
# names live inside the namespaces, so they need not be.
tag=rnl-$$
switch=$tag-sw
ns() { echo "$tag-$1"; }
addr() { echo "10.77.0.$((10 + $1))"; }
work=$(mktemp -d "/tmp/$tag.XXXXXX")
made_etc_netns=0
[[ -d /etc/netns ]] || made_etc_netns=1

NODES=(1 2 3)
COUNT=200 # records the lab produces

stop_nodes() {
    local pids=() i pid
    for i in "${NODES[@]}"; do
        pid=$(cat "$work/node$i/run/runnel.pid" 2>/dev/null) || continue
        kill -0 "$pid" 2>/dev/null && pids+=("$pid")
    done
    ((${#pids[@]})) || return 0
    step "stopping the nodes (SIGTERM): pids ${pids[*]}"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    local t0=$SECONDS
    while ((SECONDS - t0 < 30)); do
        local alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.2
    done
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            step "pid $pid still runs 30s after SIGTERM: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    step "nodes stopped ($((SECONDS - t0))s)"
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    if ((rc != 0)); then
        for i in "${NODES[@]}"; do
            local log=$work/node$i/var/log/runnel/runnel.log
            [[ -f $log ]] || continue
            echo "---- the end of node$i's log ($log)" >&2
            tail -n 30 "$log" >&2
        done
    fi
    stop_nodes
    for i in "${NODES[@]}"; do
        ip netns del "$(ns "$i")" 2>/dev/null
        rm -rf "/etc/netns/$(ns "$i")"
    done
    ip netns del "$switch" 2>/dev/null
    ((made_etc_netns)) && rmdir /etc/netns 2>/dev/null
    if ((keep)); then
        echo "work dir kept: $work"
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# nsrun N COMMAND...: runs COMMAND in node N's namespace.
nsrun() {
    local n=$1
    shift
    ip netns exec "$(ns "$n")" "$@"
}

step "network: namespaces $tag-{1,2,3} on a bridge in $switch, 10.77.0.11-13/24"
ip netns add "$switch"
ip -n "$switch" link add br0 type bridge
ip -n "$switch" link set br0 up
mkdir -p /etc/netns
hosts_arg=""
for i in "${NODES[@]}"; do
    ip netns add "$(ns "$i")"
    ip -n "$switch" link add "v$i" type veth peer name eth0 netns "$(ns "$i")"
    ip -n "$switch" link set "v$i" master br0 up
    ip -n "$(ns "$i")" addr add "$(addr "$i")/24" dev eth0
    ip -n "$(ns "$i")" link set eth0 up
    ip -n "$(ns "$i")" link set lo up
    hosts_arg+="node$i=$(addr "$i") "
done
for i in "${NODES[@]}"; do
    mkdir -p "/etc/netns/$(ns "$i")"
    {
        printf '127.0.0.1\tlocalhost\n'
        for j in "${NODES[@]}"; do printf '%s\tnode%s\n' "$(addr "$j")" "$j"; done
    } >"/etc/netns/$(ns "$i")/hosts"
done
# Every node reaches every other by name (an address on the bridge).
for i in "${NODES[@]}"; do
    for j in "${NODES[@]}"; do
        nsrun "$i" getent hosts "node$j" | grep -q "^$(addr "$j") " ||
            fail "node$j does not resolve to $(addr "$j") in $(ns "$i")"
    done
done

# The binary the cargo build wrote may be rebuilt under us: copy it once.
cp "$binary" "$work/runnel"
voters="1@node1:9093,2@node2:9093,3@node3:9093"
cluster_id=$("$work/runnel" random-uuid)

provision() { # N [more flags]
    local n=$1
    shift
    nsrun "$n" bash "$repo/deploy/provision.sh" --no-systemd --prefix "$work/node$n" \
        --node-id "$n" --address "$(addr "$n")" --advertised-host "node$n" \
        --voters "$voters" --hosts "$hosts_arg" --cluster-id "$cluster_id" \
        --binary "$work/runnel" --timeout 60 "$@"
}

for i in "${NODES[@]}"; do
    flags=()
    # As the Vagrantfile does: only the last node waits for the cluster.
    ((i == ${#NODES[@]})) && flags=(--wait-cluster)
    step "provision.sh node$i ${flags[*]}"
    if ! provision "$i" "${flags[@]}" 2>&1 | sed 's/^/    /'; then
        fail "provision.sh for node$i failed"
    fi
done

step "the files provision.sh wrote"
conf=$work/node1/etc/runnel/server.properties
for want in "node.id=1" "process.roles=broker,controller" \
    "listeners=PLAINTEXT://0.0.0.0:9092,CONTROLLER://10.77.0.11:9093" \
    "advertised.listeners=PLAINTEXT://node1:9092" "controller.quorum.voters=$voters" \
    "log.dirs=$work/node1/var/lib/runnel/data" "metrics.listener=0.0.0.0:9644" \
    "default.replication.factor=3" "min.insync.replicas=2"; do
    grep -qxF "$want" "$conf" || fail "$conf has no line $want"
done
[[ -f $work/node1/var/lib/runnel/data/meta.properties ]] || fail "node1's data dir is not formatted"
[[ -x $work/node1/usr/local/bin/runnel ]] || fail "no $work/node1/usr/local/bin/runnel"
for j in "${NODES[@]}"; do
    [[ $(grep -c "^$(addr "$j") node$j " "$work/node1/etc/hosts") == 1 ]] ||
        fail "$work/node1/etc/hosts does not have node$j once: $(cat "$work/node1/etc/hosts")"
done

step "provision.sh node1 again: changes nothing, node1 keeps running"
pid_before=$(<"$work/node1/run/runnel.pid")
cp "$work/node1/etc/hosts" "$work/hosts.before"
again=$(provision 1 2>&1) || fail "second provision.sh for node1 failed: $again"
printf '%s\n' "$again" | sed 's/^/    /'
grep -q "already formatted" <<<"$again" || fail "the second run did not see the formatted data dir"
grep -q "already running (pid $pid_before)" <<<"$again" || fail "the second run did not leave pid $pid_before running"
[[ $(<"$work/node1/run/runnel.pid") == "$pid_before" ]] || fail "node1's pid changed"
cmp -s "$work/hosts.before" "$work/node1/etc/hosts" || fail "the second run changed node1's hosts file"

runnel=$work/node1/usr/local/bin/runnel
# lab N COMMAND-ARGS...: runnel in node N's namespace; prints its output,
# fails the test if it fails.
lab() {
    local n=$1 out rc=0
    shift
    echo "    node$n\$ runnel $*"
    out=$(nsrun "$n" "$runnel" "$@" 2>&1) || rc=$?
    if ((rc != 0)); then
        printf '%s\n' "$out" | sed 's/^/      /' >&2
        fail "runnel $* exited with status $rc"
    fi
    [[ -z $out ]] || printf '%s\n' "$out" | sed 's/^/      /'
    LAB_OUT=$out
}

# retry SECONDS WHAT COMMAND...: until COMMAND succeeds; fails after
# SECONDS.
retry() {
    local limit=$1 what=$2 t0=$SECONDS
    shift 2
    until "$@"; do
        if ((SECONDS - t0 >= limit)); then
            echo "    $what: not after ${limit}s" >&2
            return 1
        fi
        sleep 1
    done
}

step "runnel topics --create"
lab 1 topics --bootstrap-server node1:9092 --create --topic lab --partitions 3 --replication-factor 3
[[ $LAB_OUT == *"Created topic lab."* ]] || fail "no 'Created topic lab.'"

step "runnel topics --list (on node2)"
lab 2 topics --bootstrap-server node2:9092 --list
grep -qx lab <<<"$LAB_OUT" || fail "--list does not list lab"

# described N: --describe shows N partitions, each led, with 3 replicas
# and 3 in sync.
described() {
    local n=$1 out
    out=$(nsrun 3 "$runnel" topics --bootstrap-server node3:9092 --describe --topic lab 2>&1) || return 1
    DESCRIBED=$out
    grep -q "PartitionCount: ${n}[[:space:]]" <<<"$out" || return 1
    grep -q "ReplicationFactor: 3[[:space:]]" <<<"$out" || return 1
    [[ $(grep -c $'^\tTopic: lab\tPartition: ' <<<"$out") == "$n" ]] || return 1
    awk -F'\t' -v n="$n" '
        $2 ~ /^Topic: lab$/ && $3 ~ /^Partition: / {
            split($4, l, ": "); split($5, r, ": "); split($6, i, ": ")
            if (l[2] == "none" || split(r[2], rs, ",") != 3 || split(i[2], is, ",") != 3) bad = 1
            seen[$3] = 1
        }
        END { c = 0; for (p in seen) c++; exit !(c == n && !bad) }' <<<"$out"
}
step "runnel topics --describe (on node3): 3 partitions, 3 replicas each, ISR of 3"
retry 30 "3 partitions with an ISR of 3 each" described 3 ||
    fail "described: $DESCRIBED"
printf '%s\n' "$DESCRIBED" | sed 's/^/      /'

step "runnel console-producer (on node2): $COUNT lines"
seq 1 "$COUNT" | sed 's/^/lab-record-/' >"$work/sent"
out=$(nsrun 2 "$runnel" console-producer --bootstrap-server node2:9092 --topic lab <"$work/sent" 2>&1) ||
    fail "console-producer exited with status $?: $out"
[[ -z $out ]] || printf '%s\n' "$out" | sed 's/^/      /'

step "runnel console-consumer --from-beginning --max-messages $COUNT (on node3)"
nsrun 3 "$runnel" console-consumer --bootstrap-server node3:9092 --topic lab --from-beginning \
    --max-messages "$COUNT" --timeout-ms 30000 >"$work/received" 2>"$work/consumer.err" ||
    fail "console-consumer exited with status $?: $(cat "$work/consumer.err")"
sed 's/^/      /' "$work/consumer.err"
sort "$work/sent" >"$work/sent.sorted"
sort "$work/received" >"$work/received.sorted"
cmp -s "$work/sent.sorted" "$work/received.sorted" ||
    fail "the consumer got $(wc -l <"$work/received") lines, not the $COUNT sent: $(diff "$work/sent.sorted" "$work/received.sorted" | head -n 10)"
echo "      all $COUNT lines came back"

# offsets N: get-offsets lists N partitions whose end offsets sum to COUNT.
offsets() {
    local n=$1
    lab 1 get-offsets --bootstrap-server node1:9092 --topic lab >/dev/null
    [[ $(grep -c '^lab:[0-9]*:[0-9]*$' <<<"$LAB_OUT") == "$n" ]] ||
        fail "get-offsets does not list $n partitions: $LAB_OUT"
    local sum
    sum=$(awk -F: '{ s += $3 } END { print s + 0 }' <<<"$LAB_OUT")
    [[ $sum == "$COUNT" ]] || fail "get-offsets sums to $sum, not $COUNT: $LAB_OUT"
    printf '%s\n' "$LAB_OUT" | sed 's/^/      /'
    echo "      sum $sum"
}
step "runnel get-offsets --topic lab (on node1)"
offsets 3

if command -v kcat >/dev/null; then
    step "kcat -C (on node2): a librdkafka client reads the same $COUNT records"
    got=$(nsrun 2 kcat -b node2:9092 -C -t lab -o beginning -e -q | sort | cmp - "$work/sent.sorted" && echo same) ||
        fail "kcat read something else"
    echo "      $got"
fi

step "runnel topics --alter --partitions 6 (on node2)"
lab 2 topics --bootstrap-server node2:9092 --alter --topic lab --partitions 6
step "runnel topics --describe: 6 partitions, ISR of 3 each"
retry 30 "6 partitions with an ISR of 3 each" described 6 ||
    fail "described: $DESCRIBED"
printf '%s\n' "$DESCRIBED" | sed 's/^/      /'
step "runnel get-offsets: 6 partitions, still $COUNT records"
offsets 6

step "runnel metadata-quorum describe --status (on node3)"
lab 3 metadata-quorum --bootstrap-server node3:9092 describe --status
grep -Eq 'CurrentVoters:.*\b1\b.*\b2\b.*\b3\b|CurrentVoters:.*"id": ?3' <<<"$LAB_OUT" ||
    fail "metadata-quorum does not list voters 1, 2 and 3"

stop_nodes
step "passed"
