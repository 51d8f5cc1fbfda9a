#!/usr/bin/env bash
# Prepares (or un-prepares) a DSR real server: a Strata proxy node behind strata-director.
#
#   scripts/real-server.sh up   VIP [VIP...]   # VIP on lo, arp_ignore=1, arp_announce=2
#   scripts/real-server.sh down VIP [VIP...]   # VIP off lo, ARP sysctls back to 0
#   scripts/real-server.sh status VIP [VIP...]
#
# Why: the director rewrites only the Ethernet destination, so a node receives frames whose
# IP destination is the VIP. It accepts them only if the VIP is local (on lo, /32 or /128),
# and it must never answer ARP for the VIP (or the segment would send VIP traffic straight
# to it): arp_ignore=1 answers only for addresses on the asking interface (lo is not),
# arp_announce=2 never uses the VIP as the source of its own ARP requests. The kernel uses
# the larger of "all" and the interface's value, so setting "all" covers every interface.
# The other tuning for a node is in sysctl/dsr-real-server.conf.
#
# Idempotent: running "up" twice changes nothing the second time. Works inside a network
# namespace (ip netns exec NS scripts/real-server.sh up VIP). Needs root.
set -euo pipefail

usage() {
    echo "usage: $0 up|down|status VIP [VIP...]" >&2
    exit 2
}

[ $# -ge 2 ] || usage
action=$1
shift

set_sysctl() { # key value
    local path="/proc/sys/${1//.//}"
    [ -w "$path" ] || { echo "real-server.sh: cannot write $1 (need root?)" >&2; exit 1; }
    [ "$(cat "$path")" = "$2" ] || echo "$2" >"$path"
}

prefix_of() { # VIP -> VIP/32 or VIP/128
    case $1 in
        *:*) echo "$1/128" ;;
        *.*) echo "$1/32" ;;
        *) echo "real-server.sh: $1 is not an IP address" >&2; exit 2 ;;
    esac
}

has_vip() { ip -o addr show dev lo | grep -qw "inet6\? $(prefix_of "$1")"; }

case $action in
    up)
        ip link set lo up
        set_sysctl net.ipv4.conf.all.arp_ignore 1
        set_sysctl net.ipv4.conf.all.arp_announce 2
        set_sysctl net.ipv4.conf.lo.arp_ignore 1
        set_sysctl net.ipv4.conf.lo.arp_announce 2
        for vip in "$@"; do
            if ! has_vip "$vip"; then
                case $vip in
                    *:*) ip -6 addr add "$(prefix_of "$vip")" dev lo nodad ;;
                    *) ip addr add "$(prefix_of "$vip")" dev lo ;;
                esac
            fi
        done
        ;;
    down)
        for vip in "$@"; do
            if has_vip "$vip"; then
                ip addr del "$(prefix_of "$vip")" dev lo
            fi
        done
        set_sysctl net.ipv4.conf.all.arp_ignore 0
        set_sysctl net.ipv4.conf.all.arp_announce 0
        set_sysctl net.ipv4.conf.lo.arp_ignore 0
        set_sysctl net.ipv4.conf.lo.arp_announce 0
        ;;
    status)
        rc=0
        for vip in "$@"; do
            if has_vip "$vip"; then echo "$vip on lo"; else echo "$vip NOT on lo"; rc=1; fi
        done
        echo "arp_ignore=$(cat /proc/sys/net/ipv4/conf/all/arp_ignore) arp_announce=$(cat /proc/sys/net/ipv4/conf/all/arp_announce)"
        [ "$(cat /proc/sys/net/ipv4/conf/all/arp_ignore)" = 1 ] && [ "$(cat /proc/sys/net/ipv4/conf/all/arp_announce)" = 2 ] || rc=1
        exit $rc
        ;;
    *) usage ;;
esac
