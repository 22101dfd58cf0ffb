/* SPDX-License-Identifier: MIT */
/*
 * What every meshprobe BPF program shares: the perf event array the records
 * go to, the per-CPU counters, and reading a socket's addresses with CO-RE.
 * Include after vmlinux.h and the libbpf headers.
 *
 * The maps here are weak definitions: an object linked from several units
 * that each include this header (latency.bpf.o: latency.bpf.c and tls.bpf.c)
 * gets one of each, which the BPF static linker keeps; in an object of one
 * unit, weak changes nothing.
 */
#ifndef MESHPROBE_COMMON_BPF_H
#define MESHPROBE_COMMON_BPF_H

#include "records.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif
#ifndef IPPROTO_TCP
#define IPPROTO_TCP 6
#endif
#ifndef MSG_PEEK
#define MSG_PEEK 2
#endif

/* One ring per CPU; user space opens them (native/perf_reader.cc). */
struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} events SEC(".maps") __weak;

/* Counters, MP_STAT_* in records.h. Per-CPU so that counting costs no atomics. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MP_STAT__COUNT);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps") __weak;

static __always_inline void stat_add(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);
	if (v)
		*v += n;
}

static __always_inline void stat_inc(__u32 idx)
{
	stat_add(idx, 1);
}

/* Sends a record to this CPU's ring; a full ring is counted, never silent. */
static __always_inline void emit(void *ctx, void *rec, __u64 size)
{
	if (bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, rec, size) < 0)
		stat_inc(MP_STAT_OUTPUT_FAIL);
}

/*
 * Batching. A perf output costs about as much as everything else a program
 * does, so records made in process context (on reads and writes) are packed
 * per CPU and sent as one perf sample of several records when the batch is
 * full, or when user space runs the probe's flush program on that CPU
 * (BPF_PROG_TEST_RUN with BPF_F_TEST_RUN_ON_CPU, every 100 ms and at stop).
 * The flush may arrive as an IPI in the middle of an append: `busy` makes it
 * leave that batch alone until the next time. Records made in softirq
 * (connection close) are sent directly with emit().
 */
#define MP_BATCH_BYTES 4096 /* power of two; 64 latency records */
#define MP_REC_MAX     96   /* largest record */

struct mp_batch {
	__u32 used; /* bytes */
	__u32 nrec; /* records */
	__u32 busy; /* an append is under way on this CPU */
	__u32 _pad;
	__u8 data[MP_BATCH_BYTES + MP_REC_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mp_batch);
} batch SEC(".maps") __weak;

#define barrier() asm volatile("" ::: "memory")

static __always_inline struct mp_batch *batch_get(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&batch, &zero);
}

static __always_inline void batch_send(void *ctx, struct mp_batch *b)
{
	__u32 n = b->used;

	if (n > MP_BATCH_BYTES)
		n = MP_BATCH_BYTES;
	if (n == 0)
		return;
	if (bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, b->data, n) < 0)
		stat_add(MP_STAT_OUTPUT_FAIL, b->nrec);
	b->used = 0;
	b->nrec = 0;
}

/*
 * An append to this CPU's batch begins. False when one is already under way
 * here (a program that can be preempted, such as fexit, was interrupted by
 * another): the caller then sends its record on its own with emit().
 */
static __always_inline bool batch_begin(struct mp_batch *b)
{
	if (!b || b->busy)
		return false;
	b->busy = 1;
	barrier();
	return true;
}

static __always_inline void batch_end(struct mp_batch *b)
{
	barrier();
	b->busy = 0;
}

/* Room for one record of `size` (<= MP_REC_MAX) bytes, between batch_begin() and batch_end(). */
static __always_inline void *batch_reserve(void *ctx, struct mp_batch *b, __u32 size)
{
	__u32 off;

	if (b->used + size > MP_BATCH_BYTES)
		batch_send(ctx, b);
	off = b->used & (MP_BATCH_BYTES - 1);
	b->used = off + size;
	b->nrec++;
	return &b->data[off];
}

/*
 * Each object's flush program: never attached; user space runs it on every
 * CPU (BPF_PROG_TEST_RUN) to send what that CPU's batch holds.
 */
#define MP_FLUSH_PROGRAM(name)                                                                     \
	SEC("raw_tp")                                                                              \
	int name(struct bpf_raw_tracepoint_args *ctx)                                              \
	{                                                                                          \
		struct mp_batch *b = batch_get();                                                  \
		if (b && !b->busy)                                                                 \
			batch_send(ctx, b);                                                        \
		return 0;                                                                          \
	}

struct mp_tuple {
	__u8 family;
	__u16 lport; /* host order */
	__u16 rport; /* host order */
	__u8 laddr[16];
	__u8 raddr[16];
};

/* Reads family, ports and addresses of a socket (CO-RE). */
static __always_inline void read_tuple(struct sock *sk, struct mp_tuple *t)
{
	t->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	t->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	t->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (t->family == AF_INET6) {
		BPF_CORE_READ_INTO(&t->laddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&t->raddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	} else {
		BPF_CORE_READ_INTO((__u32 *)&t->laddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)&t->raddr, sk, __sk_common.skc_daddr);
	}
}

static __always_inline __u32 sock_netns(struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

/*
 * The name of the current process (its thread group leader's comm): worker
 * threads often carry names of their own ("wrk:worker_0"), the process one.
 */
static __always_inline void current_process_comm(char comm[16])
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct task_struct *leader = BPF_CORE_READ(task, group_leader);

	/* all 16 bytes (BPF_CORE_READ_INTO would copy sizeof(*comm), one) */
	bpf_probe_read_kernel(comm, 16, __builtin_preserve_access_index(&leader->comm));
}

/* The kernel's smoothed RTT of a TCP socket, in microseconds. */
static __always_inline __u32 tcp_srtt_us(struct sock *sk)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	return BPF_CORE_READ(tp, srtt_us) >> 3;
}

/*
 * The kernel's windowed minimum RTT in µs (tcp_min_rtt(): the least RTT
 * sample of the last net.ipv4.tcp_min_rtt_wlen seconds, 300 by default),
 * 0 before the first sample. Unlike srtt it is not raised by an ACK that
 * waited for the peer's answer (delayed ACK), so on request/response traffic
 * it measures the path, not the server's think time.
 */
static __always_inline __u32 tcp_min_rtt_us(struct sock *sk)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	__u32 v = BPF_CORE_READ(tp, rtt_min.s[0].v);

	return v == ~0U ? 0 : v;
}

#endif
