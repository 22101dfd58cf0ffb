/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The TLS unit's link interface. bpf/tls.bpf.c (TLS handshake time) is
 * compiled on its own and linked by the BPF static linker (bpftool gen
 * object, see bpf/Makefile) into an object whose other unit hosts it:
 *   latency.bpf.o = latency.bpf.c + tls.bpf.c   (connection-tracker)
 *   tls_dev.bpf.o = tls_dev.bpf.c + tls.bpf.c   (test/tls.test.ts)
 * The host unit defines the functions below (global functions: the kernel
 * verifies each once, on its own, with scalar arguments and result) and the
 * object's LICENSE. The maps both units use (events, stats, batch) are weak
 * definitions in common.bpf.h: the linker keeps one of each.
 */
#ifndef MESHPROBE_TLS_BPF_H
#define MESHPROBE_TLS_BPF_H

/*
 * When the socket at address `sk` (read as a number) became ESTABLISHED,
 * in bpf_ktime_get_ns() time; 0 when the host does not know. A handshake
 * then also gives an MP_METRIC_TLS_CONNECT record.
 */
__u64 tls_host_established_ns(__u64 sk);

/* Is the socket at address `sk` inside --filter? */
bool tls_host_sock_wanted(__u64 sk);

/* Does the current process pass --filter? (a libssl call: no socket) */
bool tls_host_libssl_wanted(void);

#endif
