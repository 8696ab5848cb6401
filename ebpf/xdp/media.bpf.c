// SPDX-License-Identifier: (MIT OR GPL-2.0)
/*
 * edgeway's media XDP program: the firewall, in-kernel relay and steering in front of the
 * data plane's workers (ARCHITECTURE.md, "XDP").
 *
 * For every IPv4 frame:
 *   - a source in `blocked` is dropped, whatever it carries;
 *   - UDP to a media port (config.media_port_min..max) or a demultiplexing port is ours:
 *       no entry in `flows`        -> drop (no_flow), reported in bursts on `events`;
 *       malformed IP/UDP/RTP       -> drop (malformed);
 *       action DROP                -> drop (action_drop);
 *       action RELAY (edge legs)   -> latch, rewrite addresses, ports and checksums, then
 *                                     XDP_TX or redirect through `tx_ports` (dual-NIC);
 *                                     passed to the worker when relay is off or no route or
 *                                     neighbour is known yet;
 *       action REKEY (core legs)   -> redirected to the owning worker's CPU (`cpu_map`), or
 *                                     passed where it arrived when steering is off;
 *   - everything else passes untouched.
 * Userspace computes every table; this program only looks up, latches and forwards. The
 * map types come from edgeway_maps.h, generated from the Rust schema crate by build.rs.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "edgeway_maps.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
/* An aligned 64-bit load is one instruction: no reader sees half a latch word (clang 14's
 * BPF backend has no __atomic_load). */
#define READ_ONCE_U64(x) (*(volatile __u64 *)&(x))

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Flow entries by ingress key: written by the control plane, read here. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct flow_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} flows SEC(".maps");

/* Sources latched by this program for relayed entries (one atomic word each). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct xdp_latch);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} latches SEC(".maps");

/* Per-CPU counters of relayed and dropped packets, per entry. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct flow_counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} flow_stats SEC(".maps");

/* Per-CPU node-wide counters (one entry). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xdp_counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} node_stats SEC(".maps");

/* Blocked source addresses (packet byte order), filled by intrusion protection. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} blocked SEC(".maps");

/* The program's settings (one entry), written by the loader. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xdp_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} config SEC(".maps");

/* Worker index -> CPU + 1 (0: unknown), for steering re-key legs to their owner. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_WORKERS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} worker_cpus SEC(".maps");

/* CPU -> its XDP frame queue (entries created by the loader for the workers' CPUs). */
struct {
	__uint(type, BPF_MAP_TYPE_CPUMAP);
	__uint(max_entries, MAX_WORKERS);
	__type(key, __u32);
	__type(value, struct bpf_cpumap_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cpu_map SEC(".maps");

/* Interfaces relayed packets may leave by, keyed by ifindex (dual-NIC edges). */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tx_ports SEC(".maps");

/* Source address to use on each egress interface (ifindex -> IPv4, packet byte order). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} local_addrs SEC(".maps");

/* Events for userspace: latches, bursts of packets for unknown flows. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} events SEC(".maps");

/* Per-CPU no-flow burst window: when it started, drops counted since. */
struct noflow_window {
	__u64 start_ns;
	__u64 count;
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct noflow_window);
} noflow SEC(".maps");

static __always_inline void emit(struct xdp_counters *nc, __u32 kind, __u32 count,
				 const struct flow_key *key, __u32 saddr, __u16 sport)
{
	struct xdp_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		nc->events_lost++;
		return;
	}
	ev->kind = kind;
	ev->count = count;
	ev->key = *key;
	__builtin_memcpy(ev->src.ip, &saddr, 4);
	ev->src.port = sport;
	ev->src._pad = 0;
	ev->ktime_ns = bpf_ktime_get_ns();
	bpf_ringbuf_submit(ev, 0);
}

static __always_inline int drop(struct xdp_counters *nc, struct flow_counters *fc, __u32 reason)
{
	if (reason < DROP_REASONS) {
		nc->drops[reason]++;
		if (fc)
			fc->drops[reason]++;
	}
	return XDP_DROP;
}

/* Counts a packet for no flow; the first of each window becomes an event. */
static __always_inline int drop_no_flow(struct xdp_counters *nc, const struct xdp_config *cfg,
					const struct flow_key *key, __u32 saddr, __u16 sport)
{
	__u32 zero = 0;
	struct noflow_window *w = bpf_map_lookup_elem(&noflow, &zero);
	if (w) {
		__u64 now = bpf_ktime_get_ns();
		__u64 window = cfg->noflow_window_ns ? cfg->noflow_window_ns : 100000000ULL;
		w->count++;
		if (now - w->start_ns >= window) {
			emit(nc, XDP_EVENT_NO_FLOW, (__u32)w->count, key, saddr, sport);
			w->start_ns = now;
			w->count = 0;
		}
	}
	return drop(nc, 0, DROP_NO_FLOW);
}

static __always_inline int is_demux_port(const struct xdp_config *cfg, __u16 port)
{
#pragma unroll
	for (int i = 0; i < XDP_MAX_DEMUX_PORTS; i++)
		if (cfg->demux_ports[i] && cfg->demux_ports[i] == port)
			return 1;
	return 0;
}

/* RFC 1624 incremental update of a ones' complement sum for a 32-bit field change. */
static __always_inline __u16 csum_replace4(__u16 check, __u32 from, __u32 to)
{
	__u32 sum = (__u16)~check;
	sum += (__u16)~(from & 0xffff) + (__u16)~(from >> 16);
	sum += (to & 0xffff) + (to >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

static __always_inline __u16 csum_replace2(__u16 check, __u16 from, __u16 to)
{
	__u32 sum = (__u16)~check;
	sum += (__u16)~from + to;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

static __always_inline __u16 ip_checksum(struct iphdr *ip)
{
	__u32 sum = 0;
	__u16 *w = (__u16 *)ip;
#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

/* Counters of one entry, created on its first packet. */
static __always_inline struct flow_counters *flow_counters(const struct flow_key *key)
{
	struct flow_counters *fc = bpf_map_lookup_elem(&flow_stats, key);
	if (fc)
		return fc;
	struct flow_counters zero = {};
	bpf_map_update_elem(&flow_stats, key, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&flow_stats, key);
}

/* Counts a packet received for `key` on its entry's per-CPU counters; returns them. */
static __always_inline struct flow_counters *count_rx(const struct flow_key *key, __u32 payload_len)
{
	struct flow_counters *fc = flow_counters(key);
	if (fc) {
		fc->rx_packets++;
		fc->rx_bytes += payload_len;
	}
	return fc;
}

static __always_inline struct xdp_latch *latch_of(const struct flow_key *key)
{
	struct xdp_latch *l = bpf_map_lookup_elem(&latches, key);
	if (l)
		return l;
	struct xdp_latch zero = {};
	bpf_map_update_elem(&latches, key, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&latches, key);
}

static __always_inline __u64 latch_word(__u32 saddr, __u16 sport, __u32 generation)
{
	return (__u64)saddr | ((__u64)sport << 32) | ((__u64)(generation & 0xffff) << 48);
}

static __always_inline int latched_for(__u64 word, __u32 generation)
{
	return ((word >> 32) & 0xffff) != 0 && (word >> 48) == (generation & 0xffff);
}

/*
 * Checks an RTP or RTCP payload of `len` bytes at `p` (the worker applies the same rules):
 * version 2; RTP: fixed header, CSRCs and extension inside the packet; RTCP: a full first
 * header. Returns the SSRC (host order) in *ssrc, and whether it is RTCP in *rtcp.
 */
static __always_inline int rtp_ok(const __u8 *p, const void *end, __u32 len, int rtcp_entry,
				  __u32 *ssrc, int *rtcp)
{
	if ((const void *)(p + 8) > end || len < 8)
		return 0;
	if ((p[0] >> 6) != 2)
		return 0;
	__u8 pt = p[1] & 0x7f;
	*rtcp = rtcp_entry || (pt >= 64 && pt <= 95); /* RFC 5761: RTCP types 192-223 */
	if (*rtcp) {
		*ssrc = ((__u32)p[4] << 24) | ((__u32)p[5] << 16) | ((__u32)p[6] << 8) | p[7];
		return len >= 8;
	}
	if ((const void *)(p + 12) > end || len < 12)
		return 0;
	*ssrc = ((__u32)p[8] << 24) | ((__u32)p[9] << 16) | ((__u32)p[10] << 8) | p[11];
	__u32 hdr = 12 + (__u32)(p[0] & 0x0f) * 4;
	if (hdr > len)
		return 0;
	if (p[0] & 0x10) {
		const __u8 *x = p + hdr;
		if ((const void *)(x + 4) > end || hdr + 4 > len)
			return 0;
		__u32 ext = 4 + (((__u32)x[2] << 8) | x[3]) * 4;
		if (hdr + ext > len)
			return 0;
	}
	return 1;
}

static __always_inline int relay(struct xdp_md *ctx, struct xdp_counters *nc,
				 const struct xdp_config *cfg, const struct flow_key *key,
				 const struct flow_entry *entry, struct ethhdr *eth, struct iphdr *ip,
				 struct udphdr *udp, __u32 payload_len)
{
	void *end = (void *)(long)ctx->data_end;
	struct flow_counters *fc = count_rx(key, payload_len);
	if (payload_len == 0) {
		if (fc)
			fc->keepalives_rx++;
		nc->keepalives_rx++;
		return XDP_DROP;
	}
	__u32 ssrc = 0;
	int rtcp = 0;
	if (!rtp_ok((const __u8 *)(udp + 1), end, payload_len, entry->flags & FLOW_F_RTCP, &ssrc,
		    &rtcp))
		return drop(nc, fc, DROP_MALFORMED);

	__u32 saddr = ip->saddr;
	__u16 sport = bpf_ntohs(udp->source);
	struct xdp_latch *l = 0;
	__u64 seen = 0, mine = latch_word(saddr, sport, entry->generation);
	int latch_now = 0;
	if (entry->flags & FLOW_F_LATCH) {
		l = latch_of(key);
		if (!l)
			return drop(nc, fc, DROP_NOT_LATCHED);
		seen = READ_ONCE_U64(l->word);
		if (latched_for(seen, entry->generation)) {
			if (seen != mine)
				return drop(nc, fc, DROP_FOREIGN_SOURCE);
		} else {
			__u32 permit;
			__builtin_memcpy(&permit, entry->permit_ip, 4);
			if (!(entry->flags & FLOW_F_LATCH_ANY_SOURCE) && permit != saddr)
				return drop(nc, fc, DROP_FOREIGN_SOURCE);
			latch_now = 1;
		}
		int primary = rtcp == !!(entry->flags & FLOW_F_RTCP);
		if (!latch_now && (entry->flags & FLOW_F_SSRC_LOCK) && primary && l->ssrc != ssrc)
			return drop(nc, fc, DROP_WRONG_SSRC);
	}

	/* Where to: fixed, or the source the opposite entry latched. */
	__u32 daddr;
	__u16 dport;
	if (entry->out_remote.port) {
		__builtin_memcpy(&daddr, entry->out_remote.ip, 4);
		dport = entry->out_remote.port;
	} else {
		struct flow_entry *peer = bpf_map_lookup_elem(&flows, &entry->peer);
		struct xdp_latch *pl = bpf_map_lookup_elem(&latches, &entry->peer);
		__u64 pw = pl ? READ_ONCE_U64(pl->word) : 0;
		if (!peer || !latched_for(pw, peer->generation)) {
			daddr = 0;
			dport = 0;
		} else {
			daddr = (__u32)pw;
			dport = (__u16)(pw >> 32);
		}
	}

	/* Only a packet that parsed takes the latch; a race lost to the same source is fine. */
	if (latch_now && l) {
		__u64 prev = __sync_val_compare_and_swap(&l->word, seen, mine);
		if (prev != seen && prev != mine)
			return drop(nc, fc, DROP_FOREIGN_SOURCE);
		if (prev == seen) {
			l->ssrc = ssrc;
			emit(nc, XDP_EVENT_LATCHED, 1, key, saddr, sport);
		}
	}
	if (!dport)
		return drop(nc, fc, DROP_NOT_LATCHED);
	if (!(cfg->mode & XDP_MODE_RELAY) || ip->ihl != 5)
		goto pass;

	struct bpf_fib_lookup fib = {};
	fib.family = AF_INET;
	fib.l4_protocol = IPPROTO_UDP;
	fib.tot_len = bpf_ntohs(ip->tot_len);
	fib.ipv4_src = ip->daddr;
	fib.ipv4_dst = daddr;
	fib.sport = bpf_htons(entry->out_local_port);
	fib.dport = bpf_htons(dport);
	fib.ifindex = ctx->ingress_ifindex;
	if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
		goto pass; /* no route or no neighbour yet: the worker sends, the kernel resolves */
	int out_if = fib.ifindex;
	if (out_if != (int)ctx->ingress_ifindex && !bpf_map_lookup_elem(&tx_ports, &out_if))
		goto pass;
	__u32 new_saddr = ip->daddr;
	__u32 *own = bpf_map_lookup_elem(&local_addrs, &out_if);
	if (own)
		new_saddr = *own;

	/* Rewrite: our address and out port as source, the destination as destination. */
	__u16 new_sport = bpf_htons(entry->out_local_port), new_dport = bpf_htons(dport);
	if (udp->check) {
		__u16 c = udp->check;
		c = csum_replace4(c, ip->saddr, new_saddr);
		c = csum_replace4(c, ip->daddr, daddr);
		c = csum_replace2(c, udp->source, new_sport);
		c = csum_replace2(c, udp->dest, new_dport);
		udp->check = c ? c : 0xffff;
	}
	udp->source = new_sport;
	udp->dest = new_dport;
	ip->saddr = new_saddr;
	ip->daddr = daddr;
	ip->ttl = 64;
	ip->check = 0;
	ip->check = ip_checksum(ip);
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);

	if (fc) {
		fc->tx_packets++;
		fc->tx_bytes += payload_len;
	}
	nc->relayed_packets++;
	nc->relayed_bytes += payload_len;
	if (out_if == (int)ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect_map(&tx_ports, out_if, 0);

pass:
	nc->passed_packets++;
	return XDP_PASS;
}

SEC("xdp")
int edgeway_media(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0;

	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	struct xdp_counters *nc = bpf_map_lookup_elem(&node_stats, &zero);
	struct xdp_config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!nc || !cfg)
		return XDP_PASS;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end)
		return XDP_PASS; /* not even an IPv4 header: the stack drops it */
	if (bpf_map_lookup_elem(&blocked, &ip->saddr))
		return drop(nc, 0, DROP_BLOCKED_SOURCE);
	if (ip->protocol != IPPROTO_UDP || ip->version != 4 || ip->ihl < 5)
		return XDP_PASS;
	if (ip->frag_off & bpf_htons(IP_OFFSET))
		return XDP_PASS; /* a later fragment carries no ports */
	__u32 hl = ip->ihl * 4;
	struct udphdr *udp = (void *)ip + hl;
	if ((void *)(udp + 1) > end)
		return XDP_PASS;
	__u16 dport = bpf_ntohs(udp->dest);
	int demux = is_demux_port(cfg, dport);
	if (!demux && (dport < cfg->media_port_min || dport > cfg->media_port_max))
		return XDP_PASS;

	/* Ours from here on: everything is counted, nothing unknown gets through. */
	__u32 tot = bpf_ntohs(ip->tot_len);
	__u32 ulen = bpf_ntohs(udp->len);
	__u32 payload_len = ulen >= 8 ? ulen - 8 : 0;
	nc->rx_packets++;
	nc->rx_bytes += payload_len;
	if ((ip->frag_off & bpf_htons(IP_MF)) || tot < hl + 8 || ulen < 8 || ulen != tot - hl ||
	    (void *)ip + tot > end)
		return drop(nc, 0, DROP_MALFORMED);

	struct flow_key key = {};
	key.local_port = dport;
	if (demux) {
		__builtin_memcpy(key.remote_ip, &ip->saddr, 4);
		key.remote_port = bpf_ntohs(udp->source);
	}
	struct flow_entry *entry = bpf_map_lookup_elem(&flows, &key);
	if (!entry)
		return drop_no_flow(nc, cfg, &key, ip->saddr, bpf_ntohs(udp->source));

	switch (entry->action) {
	case ACTION_RELAY:
		return relay(ctx, nc, cfg, &key, entry, eth, ip, udp, payload_len);
	case ACTION_REKEY: {
		/* Counted here too, so the live view (edgewayctl flows top) sees re-key legs; the
		 * owning worker counts what it relays in the flow table. */
		count_rx(&key, payload_len);
		if (cfg->mode & XDP_MODE_STEER) {
			__u32 worker = entry->worker;
			__u32 *cpu = bpf_map_lookup_elem(&worker_cpus, &worker);
			if (cpu && *cpu) {
				nc->steered_packets++;
				return bpf_redirect_map(&cpu_map, *cpu - 1, XDP_PASS);
			}
		}
		nc->passed_packets++;
		return XDP_PASS;
	}
	case ACTION_DROP:
		return drop(nc, count_rx(&key, payload_len), DROP_ACTION_DROP);
	default:
		return drop(nc, 0, DROP_BAD_ENTRY);
	}
}
