/* strata-director's XDP data plane: the user-space AF_PACKET plane's IPv4 decisions, made
 * at the driver before any socket buffer exists (Katran's design, L2 DSR instead of IPIP).
 *
 * For a frame to our MAC carrying IPv4 to the VIP:
 *   - TCP/UDP to a served port: the pinned flow's node (FLOWS, or HALF_OPEN for flows seen
 *     only as a bare SYN), else the node of the flow's Maglev slot, pinned; Ethernet
 *     destination and source rewritten; XDP_TX;
 *   - a fragment: the Maglev slot of (source, VIP, protocol), never pinned;
 *   - ICMP fragmentation needed quoting a VIP:port -> client packet: the node owning that
 *     flow (nothing pinned);
 *   - no node up: XDP_DROP; headers cut short or contradicting each other: XDP_PASS (the
 *     kernel drops it) and counted.
 * Everything else (ARP, IPv6, other addresses and ports) is XDP_PASS, to the kernel and the
 * user-space plane.
 *
 * The flow hash and the Maglev table are the user-space ones (director/src/hash.rs,
 * director/src/maglev.rs): the control plane fills MAGLEV with the table it built, so both
 * planes send every flow to the same node. MAGLEV and NODES hold two tables each; the
 * control plane writes the idle half and then flips SERVICE.active, so a packet sees one
 * whole table, the old or the new. */

#include "bpf.h"
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>

#define TABLE_SIZE 65537
#define MAX_NODES 4096
#define NO_NODE 0xffffffffu

/* NODES flags. */
#define SERVES_PINNED 1 /* up with a resolved MAC: pinned flows may stay */
#define TAKES_NEW 2     /* and weight > 0: new flows may come */

/* STATS slots. */
enum {
	ST_FRAMES,    /* frames the program saw */
	ST_TX,        /* forwarded to a node */
	ST_NO_NODE,   /* VIP packets dropped: no node up */
	ST_ICMP,      /* ICMP fragmentation needed forwarded */
	ST_MALFORMED, /* to the VIP, headers inconsistent: passed to the kernel */
	ST_STALE,     /* pinned flows found idle past idle_ns and placed again */
	ST_COUNT,
};

struct service {
	__u32 vip;     /* network order */
	__u32 active;  /* live half of MAGLEV and NODES: 0 or 1 */
	__u64 idle_ns; /* a pin unused this long no longer counts */
	__u8 mac[6];   /* ours */
	__u8 pad[2];
};

struct node {
	__u8 mac[6];
	__u8 flags;
	__u8 pad;
};

struct flow_key {
	__u32 src; /* network order */
	__u32 dst;
	__u16 sport; /* network order */
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct pin {
	__u64 last_ns;
	__u32 node;
	__u32 pad;
};

struct node_stats {
	__u64 packets;
	__u64 bytes;
	__u64 new_flows;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct service);
} SERVICE SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} PORTS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * TABLE_SIZE);
	__type(key, __u32);
	__type(value, __u32);
} MAGLEV SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * MAX_NODES);
	__type(key, __u32);
	__type(value, struct node);
} NODES SEC(".maps");

/* Sizes are set by the loader from [flows] capacity. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct flow_key);
	__type(value, struct pin);
} FLOWS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct flow_key);
	__type(value, struct pin);
} HALF_OPEN SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_NODES);
	__type(key, __u32);
	__type(value, struct node_stats);
} NODE_STATS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ST_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} STATS SEC(".maps");

static __always_inline void count(__u32 slot)
{
	__u64 *c = bpf_map_lookup_elem(&STATS, &slot);
	if (c)
		*c += 1;
}

/* director/src/hash.rs: FNV-1a 64 over the seed's 8 little-endian bytes and the flow's 37
 * bytes (IPv4-mapped addresses, ports big-endian, protocol), then murmur3's fmix64. */
#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL
#define SEED_FLOW 0x5354524154410003ULL

static __always_inline __u64 fnv(__u64 h, __u8 b)
{
	return (h ^ b) * FNV_PRIME;
}

static __always_inline __u64 fnv_mapped(__u64 h, __u32 addr)
{
	const __u8 *a = (const __u8 *)&addr;
#pragma unroll
	for (int i = 0; i < 10; i++)
		h = fnv(h, 0);
	h = fnv(h, 0xff);
	h = fnv(h, 0xff);
#pragma unroll
	for (int i = 0; i < 4; i++)
		h = fnv(h, a[i]);
	return h;
}

static __always_inline __u64 flow_hash(const struct flow_key *k)
{
	__u64 h = FNV_OFFSET;
#pragma unroll
	for (int i = 0; i < 8; i++)
		h = fnv(h, (SEED_FLOW >> (8 * i)) & 0xff);
	h = fnv_mapped(h, k->src);
	h = fnv_mapped(h, k->dst);
	const __u8 *sp = (const __u8 *)&k->sport;
	const __u8 *dp = (const __u8 *)&k->dport;
	h = fnv(h, sp[0]);
	h = fnv(h, sp[1]);
	h = fnv(h, dp[0]);
	h = fnv(h, dp[1]);
	h = fnv(h, k->proto);
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

static __always_inline struct node *node_of(__u32 active, __u32 id)
{
	if (id >= MAX_NODES)
		return 0;
	__u32 i = active * MAX_NODES + id;
	return bpf_map_lookup_elem(&NODES, &i);
}

/* The node a flow's Maglev slot names, if it takes new flows. */
static __always_inline struct node *slot_owner(__u32 active, const struct flow_key *k, __u32 *id)
{
	__u32 i = active * TABLE_SIZE + (__u32)(flow_hash(k) % TABLE_SIZE);
	__u32 *owner = bpf_map_lookup_elem(&MAGLEV, &i);
	if (!owner || *owner == NO_NODE)
		return 0;
	struct node *n = node_of(active, *owner);
	if (!n || !(n->flags & TAKES_NEW))
		return 0;
	*id = *owner;
	return n;
}

/* A live pin of `k` in `map`: its node serves pinned flows and it is not idle too long. */
static __always_inline struct node *pinned(void *map, const struct flow_key *k, const struct service *svc,
					   __u32 active, __u64 now, __u32 *id)
{
	struct pin *p = bpf_map_lookup_elem(map, k);
	if (!p)
		return 0;
	if (now - p->last_ns > svc->idle_ns) {
		count(ST_STALE);
		return 0;
	}
	struct node *n = node_of(active, p->node);
	if (!n || !(n->flags & SERVES_PINNED))
		return 0;
	p->last_ns = now;
	*id = p->node;
	return n;
}

/* Places a TCP/UDP packet of flow `k`, pinning it when new. */
static __always_inline struct node *place(const struct flow_key *k, int syn, const struct service *svc, __u32 active,
					  __u32 *id, int *fresh)
{
	__u64 now = bpf_ktime_get_ns();
	struct node *n = pinned(&FLOWS, k, svc, active, now, id);
	if (n)
		return n;
	n = pinned(&HALF_OPEN, k, svc, active, now, id);
	if (n) {
		if (!syn) {
			/* Past the handshake: established from now on. */
			struct pin p = {.last_ns = now, .node = *id};
			bpf_map_update_elem(&FLOWS, k, &p, BPF_ANY);
			bpf_map_delete_elem(&HALF_OPEN, k);
		}
		return n;
	}
	n = slot_owner(active, k, id);
	if (!n)
		return 0;
	struct pin p = {.last_ns = now, .node = *id};
	if (syn) {
		bpf_map_update_elem(&HALF_OPEN, k, &p, BPF_ANY);
	} else {
		bpf_map_update_elem(&FLOWS, k, &p, BPF_ANY);
		bpf_map_delete_elem(&HALF_OPEN, k);
	}
	*fresh = 1;
	return n;
}

/* Where an ICMP error about flow `k` goes: its pin, else its slot; changes nothing. */
static __always_inline struct node *explain(const struct flow_key *k, const struct service *svc, __u32 active,
					    __u32 *id)
{
	__u64 now = bpf_ktime_get_ns();
	struct pin *p = bpf_map_lookup_elem(&FLOWS, k);
	if (!p)
		p = bpf_map_lookup_elem(&HALF_OPEN, k);
	if (p && now - p->last_ns <= svc->idle_ns) {
		struct node *n = node_of(active, p->node);
		if (n && (n->flags & SERVES_PINNED)) {
			*id = p->node;
			return n;
		}
	}
	return slot_owner(active, k, id);
}

static __always_inline int served(__u16 port_be)
{
	__u32 port = __builtin_bswap16(port_be);
	__u8 *on = bpf_map_lookup_elem(&PORTS, &port);
	return on && *on;
}

static __always_inline int forward(void *data, void *data_end, const struct service *svc, struct node *n, __u32 id,
				   int fresh)
{
	__u8 *eth = data;
	if ((void *)(eth + 12) > data_end)
		return XDP_PASS;
	__builtin_memcpy(eth, n->mac, 6);
	__builtin_memcpy(eth + 6, svc->mac, 6);
	struct node_stats *s = bpf_map_lookup_elem(&NODE_STATS, &id);
	if (s) {
		s->packets += 1;
		s->bytes += data_end - data;
		s->new_flows += fresh;
	}
	count(ST_TX);
	return XDP_TX;
}

static __always_inline int same_mac(const __u8 *a, const __u8 *b)
{
	return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]) | (a[5] ^ b[5])) == 0;
}

static __always_inline int malformed(void)
{
	count(ST_MALFORMED);
	return XDP_PASS;
}

SEC("xdp")
int strata_director(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	count(ST_FRAMES);

	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	__u16 ethertype = eth->h_proto;
	__u32 l3 = sizeof(struct ethhdr);
	if (ethertype == __builtin_bswap16(ETH_P_8021Q)) {
		__u16 *inner = (void *)(eth + 1) + 2;
		if ((void *)(inner + 1) > data_end)
			return XDP_PASS;
		ethertype = *inner;
		l3 += 4;
	}
	if (ethertype != __builtin_bswap16(ETH_P_IP))
		return XDP_PASS;

	__u32 zero = 0;
	struct service *svc = bpf_map_lookup_elem(&SERVICE, &zero);
	if (!svc || svc->vip == 0)
		return XDP_PASS;
	if (!same_mac(eth->h_dest, svc->mac))
		return XDP_PASS;
	__u32 active = svc->active & 1;

	struct iphdr *ip = data + l3;
	if ((void *)(ip + 1) > data_end)
		return malformed();
	if (ip->daddr != svc->vip)
		return XDP_PASS;
	__u32 ihl = (__u32)ip->ihl * 4;
	__u32 total = __builtin_bswap16(ip->tot_len);
	if (ip->version != 4 || ihl < 20 || total < ihl || data + l3 + total > data_end)
		return malformed();
	int fragment = (ip->frag_off & __builtin_bswap16(0x3fff)) != 0;
	void *l4 = (void *)ip + ihl;
	__u32 room = total - ihl; /* transport bytes before the Ethernet padding */

	struct flow_key k = {.src = ip->saddr, .dst = ip->daddr, .proto = ip->protocol};
	struct node *n;
	__u32 id = NO_NODE;
	int fresh = 0;

	if (ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP) {
		if (fragment) {
			n = slot_owner(active, &k, &id);
		} else {
			int syn = 0;
			if (ip->protocol == IPPROTO_TCP) {
				__u8 *tcp = l4;
				if ((void *)(tcp + 20) > data_end || room < 20)
					return malformed();
				__u32 doff = (tcp[12] >> 4) * 4;
				if (doff < 20 || doff > room)
					return malformed();
				syn = (tcp[13] & 0x12) == 0x02;
			} else {
				__u16 *udp = l4;
				if ((void *)(udp + 4) > data_end)
					return malformed();
				__u32 len = __builtin_bswap16(udp[2]);
				if (len < 8 || len > room)
					return malformed();
			}
			__u16 *ports = l4;
			k.sport = ports[0];
			k.dport = ports[1];
			if (!served(k.dport))
				return XDP_PASS;
			n = place(&k, syn, svc, active, &id, &fresh);
		}
	} else if (ip->protocol == IPPROTO_ICMP && !fragment) {
		/* Type 3 code 4, then the quoted IPv4 header and 8 bytes of its payload. */
		__u8 *icmp = l4;
		if ((void *)(icmp + 8) > data_end || room < 8)
			return malformed();
		if (icmp[0] != 3 || icmp[1] != 4)
			return XDP_PASS;
		struct iphdr *q = (void *)(icmp + 8);
		if ((void *)(q + 1) > data_end || room < 8 + 20)
			return malformed();
		__u32 qihl = (__u32)q->ihl * 4;
		if (q->version != 4 || qihl < 20)
			return malformed();
		if (q->saddr != svc->vip || (q->protocol != IPPROTO_TCP && q->protocol != IPPROTO_UDP))
			return XDP_PASS;
		__u16 *qports = (void *)q + qihl;
		if ((void *)(qports + 2) > data_end || room < 8 + qihl + 4)
			return malformed();
		if (!served(qports[0]))
			return XDP_PASS;
		/* The quoted packet went VIP:port -> client: turn it round. */
		k.src = q->daddr;
		k.dst = q->saddr;
		k.sport = qports[1];
		k.dport = qports[0];
		k.proto = q->protocol;
		n = explain(&k, svc, active, &id);
		if (n)
			count(ST_ICMP);
	} else {
		return XDP_PASS;
	}
	if (!n) {
		count(ST_NO_NODE);
		return XDP_DROP;
	}
	return forward(data, data_end, svc, n, id, fresh);
}

char LICENSE[] SEC("license") = "GPL";
