// SPDX-License-Identifier: (MIT OR GPL-2.0)
/*
 * perf-lab/xdp's far side: attached natively to the core's veth, it drops every frame that
 * arrives, so the veth's rx_queue_0_xdp_packets counter is what reached the far side, and
 * natively redirected frames have a program to land in (veth needs one on the peer).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int sink(struct xdp_md *ctx)
{
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
