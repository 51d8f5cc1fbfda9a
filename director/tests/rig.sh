#!/usr/bin/env bash
# Builds (or removes) the director test rig: one L2 segment of network namespaces.
#
#   director/tests/rig.sh up   PREFIX NODES [xdp]  # PREFIX-sw (bridge), PREFIX-cli, PREFIX-dir, PREFIX-n1..N
#   director/tests/rig.sh down PREFIX
#
# With "xdp", the segment is made ready for the director's native XDP plane on a veth:
# the switch side of the director's veth gets a pass-through XDP program (a veth takes in
# what its peer sends with XDP_TX only then), and the client computes its own TCP/UDP
# checksums (veth otherwise leaves them to "hardware", and a frame forwarded by XDP loses
# the mark that says so; real NICs always deliver complete checksums). Needs clang and
# ethtool.
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

# Compiles the pass-through program once per rig (into the rig's own directory).
peer_pass() {
    local p=$1 obj
    command -v clang >/dev/null || { echo "rig.sh: the XDP rig needs clang (apt-get install clang)" >&2; exit 1; }
    command -v ethtool >/dev/null || { echo "rig.sh: the XDP rig needs ethtool (apt-get install ethtool)" >&2; exit 1; }
    obj=$(mktemp --suffix=.o)
    clang -O2 -target bpf -I"/usr/include/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)" \
        -c "$REPO_DIR/director/tests/rig/peer-pass.bpf.c" -o "$obj"
    ip -n "$p-sw" link set dev v-dir xdpdrv obj "$obj" sec xdp
    rm -f "$obj"
    ip netns exec "$p-cli" ethtool -K eth0 tx off >/dev/null
}

up() {
    local p=$1 n=$2 plane=${3:-} i
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
    if [ "$plane" = xdp ]; then peer_pass "$p"; fi
}

case ${1:-} in
    up) [ $# -eq 3 ] || { [ $# -eq 4 ] && [ "$4" = xdp ]; } || { echo "usage: $0 up PREFIX NODES [xdp]" >&2; exit 2; }
        up "$2" "$3" "${4:-}" ;;
    down) [ $# -eq 2 ] || { echo "usage: $0 down PREFIX" >&2; exit 2; }; down "$2" ;;
    *) echo "usage: $0 up PREFIX NODES [xdp] | down PREFIX" >&2; exit 2 ;;
esac
