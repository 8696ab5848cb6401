// A sink that counts and drops every frame: receiving costs the sender almost nothing.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, 1); __type(key, __u32); __type(value, __u64); } cnt SEC(".maps");
SEC("xdp") int drop(struct xdp_md *ctx) { __u32 k = 0; __u64 *v = bpf_map_lookup_elem(&cnt, &k); if (v) (*v)++; return XDP_DROP; }
char _license[] SEC("license") = "GPL";
