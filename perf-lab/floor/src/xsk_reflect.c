// xsk_reflect: the least a userspace packet path can do with AF_XDP. Receives the frames an
// XDP program redirects into its XSK (queue 0 of IFNAME), swaps MACs, IPs and ports, and sends
// them back through the TX ring (one sendto kick per batch), recycling frames through the
// completion and fill rings. No crypto, no lookup. Reports pps and own CPU per packet.
// Usage: xsk_reflect IFNAME PINNED_XSKMAP SECONDS [zc]
#define _GNU_SOURCE
#include <errno.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_xdp.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <net/if.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define NFRAMES 16384
#define FRING 8192
#define FSIZE 2048
#define RING 2048

struct ring { uint32_t *prod, *cons, *flags; void *desc; uint32_t mask, cached_prod, cached_cons; };

static void map_ring(int fd, struct ring *r, struct xdp_ring_offset *o, off_t pgoff, size_t elem, uint32_t size) {
	size_t len = o->desc + size * elem;
	char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, pgoff);
	if (m == MAP_FAILED) { perror("mmap ring"); exit(1); }
	r->prod = (uint32_t *)(m + o->producer); r->cons = (uint32_t *)(m + o->consumer);
	r->flags = (uint32_t *)(m + o->flags); r->desc = m + o->desc; r->mask = size - 1;
}
static double now_s(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static long bpf(int cmd, union bpf_attr *a) { return syscall(SYS_bpf, cmd, a, sizeof(*a)); }

int main(int argc, char **argv) {
	if (argc < 4) { fprintf(stderr, "usage\n"); return 2; }
	unsigned ifindex = if_nametoindex(argv[1]);
	double secs = atof(argv[3]);
	int fd = socket(AF_XDP, SOCK_RAW, 0);
	if (fd < 0) { perror("socket"); return 1; }
	void *umem = mmap(NULL, (size_t)NFRAMES * FSIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	struct xdp_umem_reg reg = { .addr = (uint64_t)umem, .len = (uint64_t)NFRAMES * FSIZE, .chunk_size = FSIZE, .headroom = 0 };
	if (setsockopt(fd, SOL_XDP, XDP_UMEM_REG, &reg, sizeof reg)) { perror("umem reg"); return 1; }
	int n = RING, fn = FRING;
	setsockopt(fd, SOL_XDP, XDP_UMEM_FILL_RING, &fn, sizeof fn);
	setsockopt(fd, SOL_XDP, XDP_UMEM_COMPLETION_RING, &fn, sizeof fn);
	setsockopt(fd, SOL_XDP, XDP_RX_RING, &n, sizeof n);
	setsockopt(fd, SOL_XDP, XDP_TX_RING, &n, sizeof n);
	struct xdp_mmap_offsets off; socklen_t ol = sizeof off;
	if (getsockopt(fd, SOL_XDP, XDP_MMAP_OFFSETS, &off, &ol)) { perror("offsets"); return 1; }
	struct ring rx, tx, fr, cr;
	map_ring(fd, &rx, &off.rx, XDP_PGOFF_RX_RING, sizeof(struct xdp_desc), RING);
	map_ring(fd, &tx, &off.tx, XDP_PGOFF_TX_RING, sizeof(struct xdp_desc), RING);
	map_ring(fd, &fr, &off.fr, XDP_UMEM_PGOFF_FILL_RING, sizeof(uint64_t), FRING);
	map_ring(fd, &cr, &off.cr, XDP_UMEM_PGOFF_COMPLETION_RING, sizeof(uint64_t), FRING);
	// Fill ring: every frame.
	uint64_t *fdesc = fr.desc;
	for (uint32_t i = 0; i < FRING; i++) fdesc[i] = (uint64_t)i * FSIZE;
	__atomic_store_n(fr.prod, FRING, __ATOMIC_RELEASE);
	uint32_t fr_prod = FRING;
	struct sockaddr_xdp sa = { .sxdp_family = AF_XDP, .sxdp_ifindex = ifindex, .sxdp_queue_id = 0,
		.sxdp_flags = (argc > 4 && !strcmp(argv[4], "zc") ? XDP_ZEROCOPY : XDP_COPY) | XDP_USE_NEED_WAKEUP };
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa)) { perror("bind"); return 1; }
	// Put the socket in the pinned XSKMAP.
	union bpf_attr a; memset(&a, 0, sizeof a);
	a.pathname = (uint64_t)argv[2];
	int mfd = bpf(BPF_OBJ_GET, &a);
	if (mfd < 0) { perror("obj get"); return 1; }
	uint32_t key = 0, val = fd;
	memset(&a, 0, sizeof a); a.map_fd = mfd; a.key = (uint64_t)&key; a.value = (uint64_t)&val;
	if (bpf(BPF_MAP_UPDATE_ELEM, &a)) { perror("map update"); return 1; }
	fprintf(stderr, "xsk_reflect: bound %s q0, in map\n", argv[1]);
	uint64_t pkts = 0, kicks = 0, spins = 0, polls = 0;
	uint32_t rx_cons = 0, tx_prod = 0, cr_cons = 0, tx_outstanding = 0;
	double t0 = now_s(), tstart = 0; uint64_t pstart = 0; struct rusage r0;
	while (1) {
		uint32_t rp = __atomic_load_n(rx.prod, __ATOMIC_ACQUIRE);
		uint32_t got = rp - rx_cons;
		// Completion ring -> fill ring.
		uint32_t cp = __atomic_load_n(cr.prod, __ATOMIC_ACQUIRE);
		uint32_t done = cp - cr_cons;
		if (done) {
			uint64_t *c = cr.desc;
			for (uint32_t i = 0; i < done; i++) fdesc[(fr_prod + i) & fr.mask] = c[(cr_cons + i) & cr.mask];
			cr_cons += done; fr_prod += done; tx_outstanding -= done;
			__atomic_store_n(cr.cons, cr_cons, __ATOMIC_RELEASE);
			__atomic_store_n(fr.prod, fr_prod, __ATOMIC_RELEASE);
		}
		if (got) {
			if (got > 64) got = 64;
			struct xdp_desc *rd = rx.desc, *td = tx.desc;
			for (uint32_t i = 0; i < got; i++) {
				struct xdp_desc d = rd[(rx_cons + i) & rx.mask];
				unsigned char *p = (unsigned char *)umem + d.addr;
				struct ethhdr *eth = (void *)p; unsigned char m[6];
				memcpy(m, eth->h_dest, 6); memcpy(eth->h_dest, eth->h_source, 6); memcpy(eth->h_source, m, 6);
				struct iphdr *ip = (void *)(eth + 1); uint32_t t = ip->saddr; ip->saddr = ip->daddr; ip->daddr = t;
				struct udphdr *u = (void *)(ip + 1); uint16_t s = u->source; u->source = u->dest; u->dest = s;
				td[(tx_prod + i) & tx.mask] = d;
			}
			rx_cons += got; tx_prod += got; tx_outstanding += got; pkts += got;
			__atomic_store_n(rx.cons, rx_cons, __ATOMIC_RELEASE);
			__atomic_store_n(tx.prod, tx_prod, __ATOMIC_RELEASE);
			if (tx_prod - __atomic_load_n(tx.cons, __ATOMIC_ACQUIRE) >= 32) { sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0); kicks++; }
		} else if (tx_prod != __atomic_load_n(tx.cons, __ATOMIC_ACQUIRE)) {
			sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0); kicks++;
		} else {
			spins++;
			struct pollfd pf = { fd, POLLIN, 0 }; poll(&pf, 1, 1); polls++;
		}
		double t = now_s();
		if (!tstart && t - t0 > 1.0) { tstart = t; pstart = pkts; getrusage(RUSAGE_SELF, &r0); }
		if (tstart && t - tstart > secs) break;
	}
	struct rusage r1; getrusage(RUSAGE_SELF, &r1);
	double el = now_s() - tstart;
	double cpu = (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) + (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) / 1e6 +
		(r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) + (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e6;
	double pps = (pkts - pstart) / el;
	printf("xsk_reflect: %.0f pps reflected over %.1f s, own cpu %.1f%% (%.0f ns/pkt), kicks %lu polls %lu spins %lu\n",
		pps, el, 100 * cpu / el, cpu / (pkts - pstart + 1) * 1e9, kicks, polls, spins);
	struct xdp_statistics st; socklen_t sl = sizeof st;
	if (!getsockopt(fd, SOL_XDP, XDP_STATISTICS, &st, &sl))
		printf("xsk_reflect: rx_dropped %llu rx_ring_full %llu fill_empty %llu tx_invalid %llu\n",
			st.rx_dropped, st.rx_ring_full, st.rx_fill_ring_empty_descs, st.tx_invalid_descs);
	return 0;
}
