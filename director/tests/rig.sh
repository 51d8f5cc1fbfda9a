#!/usr/bin/env bash
# Builds (or removes) the director test rig: one L2 segment of network namespaces.
#
#   director/tests/rig.sh up   PREFIX NODES   # PREFIX-sw (bridge), PREFIX-cli, PREFIX-dir, PREFIX-n1..N
#   director/tests/rig.sh down PREFIX
#
#   client    PREFIX-cli  eth0 192.0.2.1/24     02:00:00:00:00:01
#   director  PREFIX-dir  eth0 192.0.2.2/24     02:00:00:00:00:02   (VIP not configured, no forwarding)
#   node i    PREFIX-ni   eth0 192.0.2.(10+i)/24 02:00:00:00:00:(10+i), VIP 192.0.2.100 on lo
#
# Only documentation addresses are used. Processes are started by the caller
# (ip netns exec PREFIX-… CMD). "down" removes every namespace of PREFIX and is safe to
# run when some or all of them are already gone. Needs root and iproute2.
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VIP=192.0.2.100

down() {
    local p=$1 ns
    for ns in $(ip netns list | awk '{print $1}' | grep -E "^${p}-(sw|cli|dir|n[0-9]+)$" || true); do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
    done
}

host() { # NAME MAC ADDR
    local p=$1 name=$2 mac=$3 addr=$4
    ip netns add "$p-$name"
    ip -n "$p-sw" link add "v-$name" type veth peer name eth0 netns "$p-$name"
    ip -n "$p-sw" link set "v-$name" master br0 up
    ip -n "$p-$name" link set lo up
    ip -n "$p-$name" link set eth0 address "$mac" up
    ip -n "$p-$name" addr add "$addr/24" dev eth0
}

up() {
    local p=$1 n=$2 i
    down "$p"
    ip netns add "$p-sw"
    ip -n "$p-sw" link add br0 type bridge forward_delay 0 stp_state 0
    ip -n "$p-sw" link set br0 up
    # A switch does not run iptables: keep br_netfilter (if loaded) out of the bridge path.
    for k in bridge-nf-call-iptables bridge-nf-call-ip6tables bridge-nf-call-arptables; do
        [ -e "/proc/sys/net/bridge/$k" ] && ip netns exec "$p-sw" sysctl -qw "net.bridge.$k=0" || true
    done
    host "$p" cli 02:00:00:00:00:01 192.0.2.1
    host "$p" dir 02:00:00:00:00:02 192.0.2.2
    # The director's kernel must neither forward VIP packets nor redirect (sysctl/director.conf).
    ip netns exec "$p-dir" sysctl -qw net.ipv4.ip_forward=0 net.ipv4.conf.all.send_redirects=0 \
        net.ipv4.conf.eth0.send_redirects=0
    # Belt and braces: should forwarding ever be switched on, the kernel still drops VIP packets.
    ip -n "$p-dir" route add blackhole "$VIP/32"
    for i in $(seq 1 "$n"); do
        host "$p" "n$i" "$(printf '02:00:00:00:00:%02x' $((10 + i)))" "192.0.2.$((10 + i))"
        ip netns exec "$p-n$i" "$REPO_DIR/scripts/real-server.sh" up "$VIP"
    done
}

case ${1:-} in
    up) [ $# -eq 3 ] || { echo "usage: $0 up PREFIX NODES" >&2; exit 2; }; up "$2" "$3" ;;
    down) [ $# -eq 2 ] || { echo "usage: $0 down PREFIX" >&2; exit 2; }; down "$2" ;;
    *) echo "usage: $0 up PREFIX NODES | down PREFIX" >&2; exit 2 ;;
esac
