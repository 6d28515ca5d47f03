#!/usr/bin/env bash
# deploy/provision.sh: install, configure, format and start one Runnel node
# (broker and controller in one process). Used by the Vagrantfile for each
# VM, by hand on bare metal, and by tests/deploy/provision-netns.sh.
# Idempotent: a second run with the same flags changes nothing and leaves
# the running node alone; a run with a new binary or new flags rewrites the
# files and restarts the node. See deploy/README.md and `--help`.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# The ports the template uses (deploy/templates/server.properties.tmpl).
readonly KAFKA_PORT=9092 CONTROLLER_PORT=9093 METRICS_PORT=9644

usage() {
    cat <<EOF
Usage: $(basename "$0") --node-id N --address IP [options]

Installs the runnel binary, writes server.properties from
deploy/templates/server.properties.tmpl, formats the data directory once
(runnel format, only if it holds no meta.properties yet), and starts the
node: as the systemd unit runnel.service running as user runnel, or with
--no-systemd as a background process. Then waits until the node's process
is up and listening (its /health answers and its CONTROLLER listener
accepts), which needs no other node; --wait-cluster also waits until the
cluster has formed. Running it again is harmless.

Options:
  --node-id N          this node's node.id (required)
  --address IP         this node's address, which the other nodes reach; the
                       CONTROLLER listener binds it (required)
  --voters LIST        controller.quorum.voters, the same on every node, e.g.
                       "1@node1:9093,2@node2:9093,3@node3:9093"
                       (default: this node alone, N@IP:9093)
  --cluster-id ID      the cluster id given to runnel format, the same on
                       every node (default: $default_cluster_id; make one
                       with: runnel random-uuid)
  --binary PATH        the runnel binary to install (default: $default_binary,
                       which \`make dist\` writes)
  --hosts "N=IP ..."   names to add to /etc/hosts, e.g.
                       "node1=192.168.56.11 node2=192.168.56.12 node3=192.168.56.13";
                       other entries for these names (such as Debian's
                       "127.0.1.1 node1") are removed, so that a node's own
                       name resolves to the address its peers use
  --advertised-host H  the host clients are told to connect to (default: the
                       --address)
  --partitions N       num.partitions (default: 3)
  --replication-factor N
                       default.replication.factor (default: 3, or the number
                       of voters if fewer)
  --min-insync N       min.insync.replicas (default: the replication factor
                       less one, at least 1)
  --prefix DIR         install under DIR instead of / (/usr/local/bin/runnel,
                       /etc/runnel/server.properties, /var/lib/runnel,
                       /etc/hosts, the unit...); a DIR other than / needs
                       --no-systemd
  --no-systemd         no runnel user and no systemd: start
                       \`runnel serve PREFIX/etc/runnel/server.properties\`
                       with nohup, log to PREFIX/var/log/runnel/runnel.log,
                       pid in PREFIX/run/runnel.pid
  --wait-cluster       also wait until this node is ready (/ready) and its
                       Metadata lists a broker per voter; give it to the last
                       node started (a cluster forms once most voters run)
  --timeout SECONDS    how long each wait may take (default: 120)
  -h, --help           this help

Ports: Kafka $KAFKA_PORT (all interfaces), CONTROLLER $CONTROLLER_PORT (--address),
HTTP /metrics, /health and /ready $METRICS_PORT (all interfaces).
EOF
}

default_cluster_id=runnel-lab-cluster
default_binary=/vagrant/dist/runnel

node_id="" address="" voters="" cluster_id=$default_cluster_id
binary=$default_binary hosts="" advertised="" prefix=/ systemd=1
partitions=3 replication_factor="" min_insync="" wait_cluster=0 timeout=120

say() { echo "provision[node ${node_id:-?}]: $*"; }
die() {
    echo "provision[node ${node_id:-?}]: error: $*" >&2
    exit 1
}

while (($#)); do
    flag=$1
    case $flag in
    -h | --help)
        usage
        exit 0
        ;;
    --no-systemd) systemd=0 ;;
    --wait-cluster) wait_cluster=1 ;;
    --*=*)
        # --flag=value is the same as --flag value.
        set -- "${flag%%=*}" "${flag#*=}" "${@:2}"
        continue
        ;;
    --node-id | --address | --voters | --cluster-id | --binary | --hosts | \
        --advertised-host | --partitions | --replication-factor | \
        --min-insync | --prefix | --timeout)
        (($# >= 2)) || die "$flag needs a value (see --help)"
        value=$2
        shift
        case $flag in
        --node-id) node_id=$value ;;
        --address) address=$value ;;
        --voters) voters=$value ;;
        --cluster-id) cluster_id=$value ;;
        --binary) binary=$value ;;
        --hosts) hosts=$value ;;
        --advertised-host) advertised=$value ;;
        --partitions) partitions=$value ;;
        --replication-factor) replication_factor=$value ;;
        --min-insync) min_insync=$value ;;
        --prefix) prefix=$value ;;
        --timeout) timeout=$value ;;
        esac
        ;;
    *) die "unknown argument $flag (see --help)" ;;
    esac
    shift
done

is_number() { [[ $1 =~ ^[0-9]+$ ]]; }

is_number "$node_id" || die "--node-id N is required (a number)"
[[ -n $address ]] || die "--address IP is required: the address the other nodes reach this one at"
[[ $address != 0.0.0.0 ]] || die "--address must be an address the other nodes reach, not 0.0.0.0"
voters=${voters:-$node_id@$address:$CONTROLLER_PORT}
advertised=${advertised:-$address}
[[ $voters =~ (^|,)[[:space:]]*$node_id@ ]] ||
    die "--voters $voters does not list this node ($node_id@...): a broker+controller node is a voter"
# One entry per comma-separated item.
IFS=, read -r -a voter_list <<<"$voters"
voter_count=${#voter_list[@]}
if [[ -z $replication_factor ]]; then
    replication_factor=$((voter_count < 3 ? voter_count : 3))
fi
if [[ -z $min_insync ]]; then
    min_insync=$((replication_factor > 1 ? replication_factor - 1 : 1))
fi
for n in partitions replication_factor min_insync timeout; do
    if ! is_number "${!n}" || ((${!n} == 0)); then
        die "--${n//_/-} must be a positive number, not ${!n}"
    fi
done
[[ $cluster_id =~ ^[A-Za-z0-9_-]{1,64}$ ]] ||
    die "--cluster-id $cluster_id: use letters, digits, - and _ (runnel random-uuid makes one)"

# Everything the script writes is under $root ("" for /).
root=${prefix%/}
if [[ -n $root ]]; then
    mkdir -p "$root"
    root=$(cd "$root" && pwd)
fi
if ((systemd)); then
    [[ -z $root ]] || die "--prefix $prefix needs --no-systemd: systemd runs units from /etc/systemd/system"
    [[ -d /run/systemd/system ]] || die "systemd is not running here; use --no-systemd"
    ((EUID == 0)) || die "installing the systemd unit needs root"
fi
bin_path=$root/usr/local/bin/runnel
conf_dir=$root/etc/runnel
conf=$conf_dir/server.properties
home_dir=$root/var/lib/runnel
data_dir=$home_dir/data
unit_path=$root/etc/systemd/system/runnel.service
hosts_file=$root/etc/hosts
log_file=$root/var/log/runnel/runnel.log
pid_file=$root/run/runnel.pid
template=$here/templates/server.properties.tmpl
unit_src=$here/systemd/runnel.service

# Set when the binary or the configuration changes: a running node restarts.
changed=0

# Puts $2 (a file) at $1 with mode $3 if it differs; sets changed.
install_if_changed() {
    local dest=$1 src=$2 mode=$3
    if [[ -f $dest ]] && cmp -s "$src" "$dest"; then
        rm -f "$src"
        return 1
    fi
    chmod "$mode" "$src"
    # A rename, so that a running binary is replaced, not overwritten.
    mv -f "$src" "$dest"
    changed=1
}

# 1. The binary.
[[ -f $binary ]] || die "no runnel binary at $binary: run \`make dist\` (it writes dist/runnel) on a Linux x86_64 host first, or give --binary PATH"
mkdir -p "${bin_path%/*}"
tmp_bin=$(mktemp "$bin_path.XXXXXX")
cp "$binary" "$tmp_bin"
chmod 0755 "$tmp_bin"
version=$("$tmp_bin" --version 2>&1) || {
    rm -f "$tmp_bin"
    die "$binary does not run here: $version"
}
if install_if_changed "$bin_path" "$tmp_bin" 0755; then
    say "installed $version as $bin_path"
else
    say "$bin_path is already $version"
fi

# 2. The user (systemd only).
if ((systemd)); then
    if ! getent passwd runnel >/dev/null; then
        group_flag=(--user-group)
        getent group runnel >/dev/null && group_flag=(--gid runnel)
        useradd --system "${group_flag[@]}" --home-dir /var/lib/runnel --no-create-home \
            --shell /usr/sbin/nologin --comment "Runnel broker" runnel
        say "created the system user runnel"
    fi
fi

# 3. /etc/hosts: one line per --hosts name, marked, and no other line
# naming it. Written in place (not renamed): /etc/hosts may be a mount.
readonly hosts_mark="# runnel provision.sh"
if [[ -n $hosts ]]; then
    declare -A host_addr=()
    host_names=() managed_lines=()
    read -r -a entries <<<"${hosts//,/ }"
    for entry in "${entries[@]}"; do
        [[ $entry =~ ^([A-Za-z0-9.-]+)=([0-9A-Fa-f.:]+)$ ]] ||
            die "--hosts entry $entry is not NAME=ADDRESS"
        host_addr[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
        host_names+=("${BASH_REMATCH[1]}")
        managed_lines+=("${BASH_REMATCH[2]} ${BASH_REMATCH[1]} $hosts_mark")
    done
    mkdir -p "${hosts_file%/*}"
    [[ -f $hosts_file ]] || printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"$hosts_file"
    new_hosts=$(mktemp)
    while IFS= read -r line || [[ -n $line ]]; do
        [[ $line == *"$hosts_mark" ]] && continue
        body=${line%%#*}
        read -r -a fields <<<"$body"
        if ((${#fields[@]} < 2)); then
            printf '%s\n' "$line"
            continue
        fi
        kept=()
        for name in "${fields[@]:1}"; do
            [[ -n ${host_addr[$name]+x} ]] || kept+=("$name")
        done
        comment=${line:${#body}}
        if ((${#kept[@]} == ${#fields[@]} - 1)); then
            printf '%s\n' "$line"
        elif ((${#kept[@]})); then
            printf '%s\t%s%s\n' "${fields[0]}" "${kept[*]}" "${comment:+ $comment}"
        fi
    done <"$hosts_file" >"$new_hosts"
    printf '%s\n' "${managed_lines[@]}" >>"$new_hosts"
    if cmp -s "$new_hosts" "$hosts_file"; then
        say "$hosts_file already has ${host_names[*]}"
    else
        cat "$new_hosts" >"$hosts_file"
        say "$hosts_file now has ${host_names[*]}"
    fi
    rm -f "$new_hosts"
fi

# 4. server.properties from the template: @TOKEN@ replaced with sed.
sed_value() { printf '%s' "$1" | sed -e 's/[\\|&]/\\&/g'; }
mkdir -p "$conf_dir"
tmp_conf=$(mktemp "$conf.XXXXXX")
sed -e "s|@NODE_ID@|$(sed_value "$node_id")|g" \
    -e "s|@ADDRESS@|$(sed_value "$address")|g" \
    -e "s|@ADVERTISED_HOST@|$(sed_value "$advertised")|g" \
    -e "s|@VOTERS@|$(sed_value "$voters")|g" \
    -e "s|@DATA_DIR@|$(sed_value "$data_dir")|g" \
    -e "s|@NUM_PARTITIONS@|$partitions|g" \
    -e "s|@REPLICATION_FACTOR@|$replication_factor|g" \
    -e "s|@MIN_INSYNC_REPLICAS@|$min_insync|g" \
    "$template" >"$tmp_conf"
if left=$(grep -o '@[A-Z_]*@' "$tmp_conf"); then
    rm -f "$tmp_conf"
    die "$template has tokens this script does not fill: $left"
fi
if install_if_changed "$conf" "$tmp_conf" 0644; then
    say "wrote $conf"
else
    say "$conf is unchanged"
fi

# 5. Format the data directory, once.
mkdir -p "$data_dir"
if [[ -f $data_dir/meta.properties ]]; then
    formatted_id=$(sed -n 's/^cluster\.id=//p' "$data_dir/meta.properties")
    [[ $formatted_id == "$cluster_id" ]] ||
        die "$data_dir is formatted for cluster $formatted_id, not $cluster_id; remove it to start over (this deletes its data)"
    say "$data_dir is already formatted for cluster $cluster_id"
else
    "$bin_path" format --cluster-id "$cluster_id" "$conf"
fi

# 6. Start (or restart after a change).

# --no-systemd: the pid of the node an earlier run started, if it still runs.
running_pid() {
    local pid
    [[ -f $pid_file ]] || return 1
    pid=$(<"$pid_file")
    is_number "$pid" && [[ -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "serve $conf" || return 1
    echo "$pid"
}

if ((systemd)); then
    chown -R runnel:runnel "$home_dir"
    tmp_unit=$(mktemp "$unit_path.XXXXXX")
    cp "$unit_src" "$tmp_unit"
    if install_if_changed "$unit_path" "$tmp_unit" 0644; then
        say "installed $unit_path"
    fi
    was_active=0
    systemctl is-active --quiet runnel && was_active=1
    systemctl daemon-reload
    systemctl enable --now --quiet runnel
    if ((was_active && changed)); then
        say "the binary or configuration changed: restarting runnel.service"
        systemctl restart runnel
    fi
else
    if pid=$(running_pid) && ((changed)); then
        say "the binary or configuration changed: stopping pid $pid (SIGTERM)"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 600); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    if pid=$(running_pid); then
        say "runnel is already running (pid $pid)"
    else
        mkdir -p "${log_file%/*}" "${pid_file%/*}"
        (cd "$home_dir" && exec nohup "$bin_path" serve "$conf" >>"$log_file" 2>&1 </dev/null) &
        started=$!
        echo "$started" >"$pid_file"
        # Until the subshell has exec'd runnel its command line is this
        # script's, and running_pid would take it for a dead node.
        for _ in $(seq 50); do
            running_pid >/dev/null && break
            kill -0 "$started" 2>/dev/null || break
            sleep 0.1
        done
        say "started runnel serve $conf (pid $started), log $log_file"
    fi
fi

# 7. Wait until the process is up and listening. Bash's /dev/tcp, as the
# machine may have no curl; the inner scripts expand their own arguments.
# shellcheck disable=SC2016
http_status() { # host port path: prints the HTTP status
    timeout 5 bash -c '
        exec 3<>"/dev/tcp/$1/$2" || exit 1
        printf "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" "$3" "$1" >&3
        read -r _ status _ <&3 && echo "$status"' _ "$@" 2>/dev/null
}
# shellcheck disable=SC2016
tcp_open() { timeout 5 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$@" 2>/dev/null; }

node_alive() {
    if ((systemd)); then
        [[ $(systemctl is-active runnel) =~ ^(active|activating)$ ]]
    else
        running_pid >/dev/null
    fi
}
show_log() {
    if ((systemd)); then
        journalctl -u runnel -n 40 --no-pager >&2 || true
    else
        tail -n 40 "$log_file" >&2 || true
    fi
}

# wait_until DESCRIPTION COMMAND...: runs COMMAND each second until it
# succeeds, with a progress line every 5 s; fails after --timeout seconds
# or when the process is gone.
wait_until() {
    local what=$1 start=$SECONDS
    shift
    until "$@"; do
        if ! node_alive; then
            echo "provision[node $node_id]: runnel exited; the end of its log:" >&2
            show_log
            die "node $node_id is not running"
        fi
        if ((SECONDS - start >= timeout)); then
            show_log
            die "node $node_id: $what: still not after ${timeout}s"
        fi
        if (((SECONDS - start) % 5 == 4)); then
            say "waiting until $what ($((SECONDS - start))s of ${timeout}s)"
        fi
        sleep 1
    done
    say "$what ($((SECONDS - start))s)"
}

listening() {
    [[ $(http_status 127.0.0.1 $METRICS_PORT /health) == 200 ]] &&
        tcp_open "$address" $CONTROLLER_PORT
}
wait_until "up: /health answers on :$METRICS_PORT, CONTROLLER listens on $address:$CONTROLLER_PORT" listening

if ((wait_cluster)); then
    ready() { [[ $(http_status 127.0.0.1 $METRICS_PORT /ready) == 200 ]]; }
    wait_until "ready: /ready answers 200" ready
    # broker-api-versions prints one "host:port (id: N rack: ...) -> (" line per broker.
    all_brokers() {
        local n
        n=$("$bin_path" broker-api-versions --bootstrap-server "127.0.0.1:$KAFKA_PORT" 2>/dev/null |
            grep -c '(id: ') || return 1
        ((n >= voter_count))
    }
    wait_until "cluster formed: Metadata lists all $voter_count brokers" all_brokers
fi
say "done"
