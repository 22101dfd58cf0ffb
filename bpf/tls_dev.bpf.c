// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The host unit of tls_dev.bpf.o: the TLS programs (tls.bpf.c) on their
 * own, for test/tls.test.ts. latency.bpf.c hosts the same unit with its
 * socket table and --filter; here there are neither, so no
 * MP_METRIC_TLS_CONNECT records and every socket and process is measured.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "tls.bpf.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

__u64 tls_host_established_ns(__u64 sk)
{
	return 0; /* not known */
}

bool tls_host_sock_wanted(__u64 sk)
{
	return true;
}

bool tls_host_libssl_wanted(void)
{
	return true;
}
