// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Development object for bpf/tls.bpf.h (TLS handshake time) on its own, for
 * test/tls.test.ts, until latency.bpf.c includes the header.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "common.bpf.h"
#include "tls.bpf.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";
