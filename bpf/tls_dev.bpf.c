// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * bpf/tls.bpf.h (TLS handshake time) on its own, for test/tls.test.ts:
 * latency.bpf.c includes the same header with its socket table
 * (MP_TLS_SOCK_LOOKUP/MP_TLS_SOCK_WANTED); here there is none, so no
 * MP_METRIC_TLS_CONNECT records and no --filter.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "common.bpf.h"
#include "tls.bpf.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";
