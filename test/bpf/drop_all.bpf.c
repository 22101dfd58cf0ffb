// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Test programs that drop every packet they see: a TC classifier returning
 * TC_ACT_SHOT and an XDP program returning XDP_DROP. test/drops.test.ts
 * attaches them inside network namespaces it makes, with tc and ip, to
 * create drops whose number it knows.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

SEC("tc")
int tc_shot(struct __sk_buff *skb)
{
	return 2; /* TC_ACT_SHOT */
}

SEC("xdp")
int xdp_drop(struct xdp_md *ctx)
{
	return 1; /* XDP_DROP */
}
