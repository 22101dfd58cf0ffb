// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * latency-probe, kernel side.
 *
 * Pairs each request with its response per TCP socket and emits one
 * mp_latency_rec per finished exchange:
 *   client view: a connect()ed socket writes a request, then reads; the
 *                latency runs from the first write of the request to the
 *                first read of the response.
 *   server view: an accept()ed socket reads a request, then answers; the
 *                latency runs from the first read of the request to the
 *                first write of the response.
 * Both tracepoints fire when the read or write returns to the application.
 *
 * Hooks (chosen by user space at start-up, see src/probes/latency.ts):
 *   sock:inet_sock_set_state                 connection start and end, role
 *   raw_tp sock_send_length/sock_recv_length reads and writes (kernel >= 6.3)
 *   or fexit tcp_sendmsg/tcp_recvmsg         (BTF trampolines, older kernels;
 *                                             two forms: with and without bpf_get_func_ret)
 *   or kprobe+kretprobe on the same          (no BTF trampolines)
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "common.bpf.h"
#include "filter.bpf.h"
#include "tls.bpf.h"

#ifndef READ_ONCE
#define READ_ONCE(x) (*(volatile typeof(x) *)&(x))
#endif

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Settings, written by user space before load. */
const volatile __u64 sock_table_size =
	65536;				/* max_entries of socks: a power of two >= SOCK_WAYS */
const volatile bool infer_roles = true; /* track connections that predate the probe */
const volatile bool measure_connections =
	false; /* connection-tracker: set-up, failures, idle gaps, lifetimes */

#define TCP_ESTABLISHED_ 1
#define TCP_SYN_SENT_	 2
#define TCP_SYN_RECV_	 3
#define TCP_CLOSE_	 7
#define TCP_CLOSE_WAIT_	 8
#define TCP_LISTEN_	 10

#define PHASE_IDLE     0
#define PHASE_REQUEST  1 /* request under way: its start time is set */
#define PHASE_RESPONSE 2 /* latency emitted, response still flowing */

struct sock_state {
	__u64 owner; /* the socket whose state this is, written last by init_slot() */
	__u64 conn_id;
	__u64 req_owner; /* the socket that started the request under way (see on_io) */
	__u64 first_ns;
	__u64 req_start_ns;
	__u64 bytes_sent;
	__u64 bytes_received;
	__u32 requests;
	__u32 netns; /* the socket's network namespace inode, read once */
	__u32 flags;
	__u8 role;
	__u8 phase;
	__u8 opened;	     /* MP_REC_CONN_OPEN emitted */
	__u8 ignored;	     /* outside the filter: kept only so that it is not looked at again */
	__u8 unsampled;	     /* the request under way is not measured (sampling) */
	__u8 connect_wanted; /* a client: the filter, decided at connect() (its failure has no
				process) */
	__u64 setup_ns;	     /* TCP set-up time, emitted with the first use (server) */
	__u64 last_end_ns;   /* when the last exchange ended (idle gaps) */
	struct mp_tuple tuple;
};

/*
 * The socket table: a set-associative cache in an array map, 4 ways a set,
 * keyed by the struct sock address. Array lookups are inlined by the
 * verifier, so finding a socket costs a few instructions instead of a hash
 * map walk (the largest single cost on a busy host). A full set gives its
 * least recently used way to the new socket, and that eviction is counted.
 */
#define SOCK_WAYS 4

struct sock_slot {
	__u64 sk; /* 0: free */
	__u64 last_ns;
	struct sock_state st;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536); /* sets * SOCK_WAYS, set by user space */
	__type(key, __u32);
	__type(value, struct sock_slot);
} socks SEC(".maps");

static __always_inline __u32 sock_set_base(__u64 sk)
{
	/* struct sock addresses differ above bit 6; mix them (Fibonacci hashing) */
	__u32 set = (__u32)(((sk >> 6) * 0x9E3779B97F4A7C15ULL) >> 32) &
		    (__u32)(sock_table_size / SOCK_WAYS - 1);

	return set * SOCK_WAYS;
}

/*
 * Replaces a way's owner if it is still `old`: a compare-and-swap. Kernels
 * before 5.12 reject BPF atomics outright (even unreachable ones), so the
 * build makes a second object, <probe>.noatomics.bpf.o, with plain stores:
 * there two CPUs claiming the same way at the same instant can both believe
 * they won (the later socket keeps the way; the other is adopted again on
 * its next read or write). User space picks the object by probing the kernel.
 */
static __always_inline bool way_swap(__u64 *owner, __u64 old, __u64 new)
{
#ifndef MP_NO_ATOMICS
	return __sync_val_compare_and_swap(owner, old, new) == old;
#else
	if (*owner != old)
		return false;
	*owner = new;
	return true;
#endif
}

static __always_inline struct sock_slot *sock_find(__u64 sk)
{
	__u32 base = sock_set_base(sk);

#pragma unroll
	for (int w = 0; w < SOCK_WAYS; w++) {
		__u32 idx = base + w;
		struct sock_slot *s = bpf_map_lookup_elem(&socks, &idx);

		if (s && s->sk == sk)
			return s;
	}
	return NULL;
}

/* Claims a way for sk: a free one, else the least recently used (counted). */
static __always_inline struct sock_slot *sock_claim(__u64 sk)
{
	__u32 base = sock_set_base(sk);
	struct sock_slot *victim = NULL;
	__u64 victim_sk = 0, oldest = ~0ULL;

#pragma unroll
	for (int w = 0; w < SOCK_WAYS; w++) {
		__u32 idx = base + w;
		struct sock_slot *s = bpf_map_lookup_elem(&socks, &idx);

		if (!s)
			continue;
		if (s->sk == 0 && way_swap(&s->sk, 0, sk))
			return s;
		if (s->last_ns < oldest) {
			oldest = s->last_ns;
			victim = s;
			victim_sk = s->sk;
		}
	}
	if (victim && victim_sk && way_swap(&victim->sk, victim_sk, sk)) {
		stat_inc(MP_STAT_EVICTED);
		return victim;
	}
	return NULL;
}

/*
 * Listening ports, per network namespace (struct listen_key: records.h): user
 * space fills it from /proc/<pid>/net/tcp{,6} at start, this program keeps it
 * current from TCP_LISTEN transitions. A connection that predates the probe
 * is a server when its local port listens in its namespace, else a client.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct listen_key);
	__type(value, __u8);
} listeners SEC(".maps");

/* Per-CPU sequence for connection ids: (cpu + 1) << 48 | n. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} conn_seq SEC(".maps");

static __always_inline __u64 next_conn_id(void)
{
	__u32 zero = 0;
	__u64 *seq = bpf_map_lookup_elem(&conn_seq, &zero);
	__u64 n;

	if (!seq)
		return 0;
		/*
		 * A program in process context can be preempted by another task that runs
		 * it on the same CPU: a plain increment could hand two connections one id.
		 */
#ifndef MP_NO_ATOMICS
	n = __sync_fetch_and_add(seq, 1) + 1;
#else
	n = ++*seq;
#endif
	return ((__u64)(bpf_get_smp_processor_id() + 1) << 48) | (n & 0xffffffffffffULL);
}

/*
 * (Re)starts the state of a way for a new connection. `owner` is written
 * last: a way whose owner is not the socket looking at it (two CPUs
 * initialising the same way at once, which only a thrashing table does) is
 * not used until the socket claims it again.
 */
static __always_inline void init_slot(struct sock_slot *s, __u64 key, __u8 role, __u32 flags,
				      struct mp_tuple *t)
{
	struct sock_state *st = &s->st;

	__builtin_memset(st, 0, sizeof(*st));
	st->conn_id = next_conn_id();
	st->first_ns = bpf_ktime_get_ns();
	s->last_ns = st->first_ns;
	st->role = role;
	st->flags = flags;
	st->tuple = *t;
	st->netns = sock_netns((struct sock *)key);
	barrier();
	st->owner = key;
}

/* Starts tracking a socket in way `s`. Returns `s`. */
static __always_inline struct sock_slot *track_in(struct sock_slot *s, __u64 key, __u8 role,
						  __u32 flags, struct mp_tuple *t)
{
	if (!s)
		return NULL;
	init_slot(s, key, role, flags, t);
	return s;
}

static __always_inline struct sock_slot *track(__u64 key, __u8 role, __u32 flags,
					       struct mp_tuple *t)
{
	return track_in(sock_claim(key), key, role, flags, t);
}

static __always_inline void fill_hdr(struct mp_rec_hdr *h, __u8 kind, struct sock_state *st)
{
	h->kind = kind;
	h->version = MP_REC_VERSION;
	h->role = st->role;
	h->family = st->tuple.family;
	h->tgid = bpf_get_current_pid_tgid() >> 32;
	h->conn_id = st->conn_id;
}

/* First use by a process: who owns the connection (process context, batched). */
static __always_inline void emit_open(void *ctx, struct sock *sk, struct sock_state *st)
{
	struct mp_batch *b = batch_get();
	bool batched = batch_begin(b);
	struct mp_conn_open_rec alone, *r;
	__u64 id = bpf_get_current_pid_tgid();

	st->opened = 1;
	r = batched ? batch_reserve(ctx, b, sizeof(*r)) : &alone;
	fill_hdr(&r->hdr, MP_REC_CONN_OPEN, st);
	r->start_ns = st->first_ns;
	r->cgroup_id = bpf_get_current_cgroup_id();
	r->pid = (__u32)id;
	r->netns = sock_netns(sk);
	r->lport = st->tuple.lport;
	r->rport = st->tuple.rport;
	r->flags = st->flags;
	__builtin_memcpy(r->laddr, st->tuple.laddr, 16);
	__builtin_memcpy(r->raddr, st->tuple.raddr, 16);
	current_process_comm(r->comm);
	if (batched)
		batch_end(b);
	else
		emit(ctx, r, sizeof(*r));
}

/* One finished exchange (process context, batched). */
static __always_inline void emit_latency(void *ctx, struct sock *sk, struct sock_state *st,
					 __u64 start, __u64 now)
{
	struct mp_batch *b = batch_get();
	bool batched = batch_begin(b);
	struct mp_latency_rec alone, *r;

	st->requests++;
	stat_inc(MP_STAT_EMITTED);
	stat_inc(st->role == MP_ROLE_CLIENT ? MP_STAT_MEASURED_CLIENT : MP_STAT_MEASURED_SERVER);
	r = batched ? batch_reserve(ctx, b, sizeof(*r)) : &alone;
	fill_hdr(&r->hdr, MP_REC_LATENCY, st);
	r->end_ns = now;
	r->latency_ns = now - start;
	/* the kernel's RTTs change slowly: read them on the first exchange and every 8th (0 = not
	 * read) */
	if ((st->requests & 7) == 1) {
		r->srtt_us = tcp_srtt_us(sk);
		r->min_rtt_us = tcp_min_rtt_us(sk);
	} else {
		r->srtt_us = 0;
		r->min_rtt_us = 0;
	}
	r->lport = st->tuple.lport;
	r->rport = st->tuple.rport;
	r->netns = st->netns;
	__builtin_memcpy(r->raddr, st->tuple.raddr, 16);
	if (batched)
		batch_end(b);
	else
		emit(ctx, r, sizeof(*r));
}

/*
 * One figure of a connection's life (connection-tracker): batched when
 * `batched_ok` (process context), else sent alone.
 */
static __always_inline void emit_measure(void *ctx, struct sock *sk, struct sock_state *st,
					 __u8 metric, __u8 result, __u64 value, __u32 err)
{
	struct mp_batch *b = batch_get();
	bool batched = batch_begin(b);
	struct mp_measure_rec alone = {}, *r;

	r = batched ? batch_reserve(ctx, b, sizeof(*r)) : &alone;
	fill_hdr(&r->hdr, MP_REC_MEASURE, st);
	r->value = value;
	r->at_ns = bpf_ktime_get_ns();
	r->netns = sock_netns(sk);
	r->lport = st->tuple.lport;
	r->rport = st->tuple.rport;
	r->metric = metric;
	r->result = result;
	r->detail = 0;
	r->_pad = 0;
	r->err = err;
	__builtin_memcpy(r->raddr, st->tuple.raddr, 16);
	if (batched)
		batch_end(b);
	else
		emit(ctx, r, sizeof(*r));
}

/*
 * The close record of a connection a process used (softirq: sent alone),
 * and with connection-tracker its lifetime and number of requests.
 */
static __always_inline void emit_close(void *ctx, struct sock *sk, struct sock_state *st)
{
	struct mp_conn_close_rec r = {};
	__u64 now = bpf_ktime_get_ns();

	fill_hdr(&r.hdr, MP_REC_CONN_CLOSE, st);
	r.end_ns = now;
	r.duration_ns = now - st->first_ns;
	r.requests = st->requests;
	r.srtt_us = tcp_srtt_us(sk);
	r.bytes_sent = st->bytes_sent;
	r.bytes_received = st->bytes_received;
	r.flags = st->flags;
	emit(ctx, &r, sizeof(r));
	if (!measure_connections || st->ignored)
		return;
	/* a connection adopted mid-life has no known start: its lifetime is not one */
	if (!(st->flags & MP_CONN_F_ROLE_INFERRED))
		emit_measure(ctx, sk, st, MP_METRIC_LIFETIME, MP_RESULT_OK, r.duration_ns, 0);
	emit_measure(ctx, sk, st, MP_METRIC_REQUESTS, MP_RESULT_OK, st->requests, 0);
}

/* Why a connect() failed, from the socket's error (set before the state turns to CLOSE). */
static __always_inline __u8 connect_result(__u32 err)
{
	switch (err) {
	case 0:
		return MP_RESULT_ABORTED;
	case 111:
		return MP_RESULT_REFUSED; /* ECONNREFUSED */
	case 110:
		return MP_RESULT_TIMEOUT; /* ETIMEDOUT */
	case 104:
		return MP_RESULT_RESET; /* ECONNRESET */
	case 113:			/* EHOSTUNREACH */
	case 101:
		return MP_RESULT_UNREACH; /* ENETUNREACH */
	default:
		return MP_RESULT_OTHER;
	}
}

MP_FLUSH_PROGRAM(latency_flush)

/*
 * The way of a socket being read or written, or NULL. A TCP connection the
 * probe has not seen set up (it predates the probe) is adopted when
 * infer_roles is set, as a server if its local port listens, else a client.
 */
static __always_inline struct sock_slot *lookup_io(struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct sock_slot *s = sock_find(key);
	struct mp_tuple t = {};
	int state, family;

	if (s && s->st.owner == key)
		return s->st.ignored ? NULL : s;
	if (s) /* mixed up by two concurrent claims: started afresh below, in the same way */
		stat_inc(MP_STAT_DISCARDED);
	if (!infer_roles)
		return NULL;
	/* not seen being set up: only TCP sockets in data-transfer states */
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return NULL;
	if (BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol) != IPPROTO_TCP)
		return NULL;
	state = BPF_CORE_READ(sk, __sk_common.skc_state);
	if (state != TCP_ESTABLISHED_ && state != TCP_CLOSE_WAIT_)
		return NULL;
	read_tuple(sk, &t);
	{
		struct listen_key lk = {.netns = sock_netns(sk), .port = t.lport};
		__u8 role = bpf_map_lookup_elem(&listeners, &lk) ? MP_ROLE_SERVER : MP_ROLE_CLIENT;

		return track_in(s ? s : sock_claim(key), key, role, MP_CONN_F_ROLE_INFERRED, &t);
	}
}

/*
 * Data in the direction that starts a request: a request begins (the first
 * such read or write after a response), or goes on (its bytes counted).
 */
static __always_inline void request_io(void *ctx, struct sock *sk, struct sock_slot *s)
{
	struct sock_state *st = &s->st;

	if (st->phase == PHASE_REQUEST)
		return;
	st->phase = PHASE_REQUEST;
	st->req_start_ns = bpf_ktime_get_ns();
	st->unsampled = !sample_request();
	/* the idle gap before a request, for the requests sampled */
	if (measure_connections && !st->unsampled && st->last_end_ns &&
	    st->req_start_ns > st->last_end_ns)
		emit_measure(ctx, sk, st, MP_METRIC_IDLE, MP_RESULT_OK,
			     st->req_start_ns - st->last_end_ns, 0);
	st->req_owner = (__u64)sk;
	s->last_ns = st->req_start_ns;
}

/*
 * The first data of the response to the request under way: the exchange
 * ends, and is measured (or, unsampled, counted).
 */
static __always_inline void response_begins(void *ctx, struct sock *sk, struct sock_slot *s)
{
	struct sock_state *st = &s->st;
	__u64 now = bpf_ktime_get_ns();
	__u64 start =
		READ_ONCE(st->req_start_ns); /* read once: checked and used as the same value */

	/*
	 * Another CPU may have given this way to another socket meanwhile, or
	 * the socket it took the way from may still have been writing into it:
	 * the request must be this socket's own, started by this socket.
	 */
	st->last_end_ns = now;
	if (!(s->sk == (__u64)sk && st->req_owner == (__u64)sk && start && start <= now)) {
		stat_inc(MP_STAT_DISCARDED);
		return;
	}
	/* an exchange on a connection that carried one before (measured or not): reuse */
	if (st->requests > 0)
		stat_inc(st->role == MP_ROLE_CLIENT ? MP_STAT_REUSED_CLIENT
						    : MP_STAT_REUSED_SERVER);
	if (st->unsampled) {
		st->requests++; /* counted on the connection, not measured */
		stat_inc(st->role == MP_ROLE_CLIENT ? MP_STAT_UNSAMPLED_CLIENT
						    : MP_STAT_UNSAMPLED_SERVER);
	} else {
		emit_latency(ctx, sk, st, start, now);
	}
}

/*
 * A read or write of `ret` bytes returned to the application. `starter` is
 * the role for which this direction begins a request: a write for a client,
 * a read for a server. The same direction on the other role ends one.
 */
static __always_inline int on_io(void *ctx, struct sock *sk, int ret, __u8 starter)
{
	struct sock_slot *s = lookup_io(sk);
	struct sock_state *st;

	if (!s)
		return 0;
	st = &s->st;
	if (!st->opened) {
		/*
		 * First use by a process: the filter is decided now, once. A socket
		 * outside it keeps its way, marked ignored, so that its next reads
		 * and writes cost one lookup.
		 */
		if (!filter_pass(sk, st->tuple.lport, st->tuple.rport)) {
			st->ignored = 1;
			stat_inc(MP_STAT_FILTERED);
			return 0;
		}
		stat_inc(MP_STAT_TRACKED);
		if (measure_connections && st->setup_ns && st->role == MP_ROLE_SERVER)
			emit_measure(ctx, sk, st, MP_METRIC_SETUP, MP_RESULT_OK, st->setup_ns, 0);
	}
	if (starter == MP_ROLE_CLIENT) {
		stat_inc(MP_STAT_SEND);
		st->bytes_sent += ret;
	} else {
		stat_inc(MP_STAT_RECV);
		st->bytes_received += ret;
	}
	if (!st->opened)
		emit_open(ctx, sk, st);
	if (st->role == starter) {
		request_io(ctx, sk, s);
	} else if (st->phase == PHASE_REQUEST) {
		response_begins(ctx, sk, s);
		st->phase = PHASE_RESPONSE;
	}
	return 0;
}

static __always_inline int on_send(void *ctx, struct sock *sk, int ret)
{
	return ret > 0 ? on_io(ctx, sk, ret, MP_ROLE_CLIENT) : 0;
}

static __always_inline int on_recv(void *ctx, struct sock *sk, int ret, int flags)
{
	return ret > 0 && !(flags & MSG_PEEK) ? on_io(ctx, sk, ret, MP_ROLE_SERVER) : 0;
}

/* raw tracepoint: TP_PROTO(struct sock *sk, int ret, int flags) */
SEC("raw_tracepoint/sock_send_length")
int latency_send(struct bpf_raw_tracepoint_args *ctx)
{
	return on_send(ctx, (struct sock *)ctx->args[0], (int)ctx->args[1]);
}

SEC("raw_tracepoint/sock_recv_length")
int latency_recv(struct bpf_raw_tracepoint_args *ctx)
{
	return on_recv(ctx, (struct sock *)ctx->args[0], (int)ctx->args[1], (int)ctx->args[2]);
}

/*
 * Kernels before 6.3 have no sock_send_length/sock_recv_length. With BTF
 * trampolines: fexit on tcp_sendmsg/tcp_recvmsg (arguments and return value
 * read through bpf_get_func_arg/ret, whatever the kernel's signature).
 * Without them: a kprobe keeps the socket per thread, the kretprobe finishes.
 * These paths see TCP only, and cannot tell MSG_PEEK reads apart.
 */
SEC("fexit/tcp_sendmsg")
int latency_send_fx(__u64 *ctx)
{
	__u64 sk = 0, ret = 0;

	if (bpf_get_func_arg(ctx, 0, &sk) || bpf_get_func_ret(ctx, &ret))
		return 0;
	return on_send(ctx, (struct sock *)sk, (int)ret);
}

SEC("fexit/tcp_recvmsg")
int latency_recv_fx(__u64 *ctx)
{
	__u64 sk = 0, ret = 0;

	if (bpf_get_func_arg(ctx, 0, &sk) || bpf_get_func_ret(ctx, &ret))
		return 0;
	return on_recv(ctx, (struct sock *)sk, (int)ret, 0);
}

/*
 * 5.10 to 5.16: BTF trampolines without bpf_get_func_arg/ret. The arguments
 * and the return value are read at their places, which the verifier checks
 * against the kernel's own prototype: tcp_recvmsg(sk, msg, len, nonblock,
 * flags, addr_len) until 5.18 (5.19 dropped nonblock; such kernels take the
 * programs above). Their flags tell MSG_PEEK reads apart. The socket is read
 * as a number (the socket table hashes its address, and the verifier forbids
 * arithmetic on a typed pointer).
 */
static __always_inline __u64 ctx_word(__u64 *ctx, int i)
{
	__u64 v = 0;

	bpf_probe_read_kernel(&v, sizeof(v), &ctx[i]);
	return v;
}

SEC("fexit/tcp_sendmsg")
int latency_send_fa(__u64 *ctx)
{
	/* tcp_sendmsg(sk, msg, size) = ret */
	return on_send(ctx, (struct sock *)ctx_word(ctx, 0), (int)ctx[3]);
}

SEC("fexit/tcp_recvmsg")
int latency_recv_fa(__u64 *ctx)
{
	/* tcp_recvmsg(sk, msg, len, nonblock, flags, addr_len) = ret */
	return on_recv(ctx, (struct sock *)ctx_word(ctx, 0), (int)ctx[6], (int)ctx[4]);
}

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);   /* pid_tgid */
	__type(value, __u64); /* struct sock * */
} io_args SEC(".maps");

static __always_inline int stash_sock(struct sock *sk)
{
	__u64 id = bpf_get_current_pid_tgid(), v = (__u64)sk;

	bpf_map_update_elem(&io_args, &id, &v, BPF_ANY);
	return 0;
}

static __always_inline struct sock *take_sock(void)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u64 *v = bpf_map_lookup_elem(&io_args, &id);
	struct sock *sk;

	if (!v)
		return NULL;
	sk = (struct sock *)*v;
	bpf_map_delete_elem(&io_args, &id);
	return sk;
}

SEC("kprobe/tcp_sendmsg")
int BPF_KPROBE(latency_send_kp, struct sock *sk)
{
	return stash_sock(sk);
}

SEC("kretprobe/tcp_sendmsg")
int BPF_KRETPROBE(latency_send_kr, int ret)
{
	struct sock *sk = take_sock();

	return sk ? on_send(ctx, sk, ret) : 0;
}

SEC("kprobe/tcp_recvmsg")
int BPF_KPROBE(latency_recv_kp, struct sock *sk)
{
	return stash_sock(sk);
}

SEC("kretprobe/tcp_recvmsg")
int BPF_KRETPROBE(latency_recv_kr, int ret)
{
	struct sock *sk = take_sock();

	return sk ? on_recv(ctx, sk, ret, 0) : 0;
}

/*
 * The host side of the TLS unit (tls.bpf.c, linked into this object, see
 * tls.bpf.h): this socket table says when a socket became ESTABLISHED (for
 * the time the application waits between connect() and a finished
 * handshake) and whether it is inside --filter. Global functions: the
 * kernel verifies each once, on its own.
 */
__u64 tls_host_established_ns(__u64 sk)
{
	struct sock_slot *s = sock_find(sk);

	if (!s || s->st.owner != sk)
		return 0;
	if (s->st.role == MP_ROLE_CLIENT)
		return s->st.setup_ns ? s->st.first_ns + s->st.setup_ns : 0;
	return s->st.first_ns; /* a server's way starts when it turns ESTABLISHED */
}

/*
 * Decided at the socket's first read or write; a socket the table does not
 * hold is inside when there is no filter.
 */
bool tls_host_sock_wanted(__u64 sk)
{
	struct sock_slot *s = sock_find(sk);

	if (s && s->st.owner == sk)
		return !s->st.ignored;
	return selector_count == 0;
}

bool tls_host_libssl_wanted(void)
{
	return filter_pass(NULL, 0, 0);
}

/* ---- sock:inet_sock_set_state: listeners, and connections begin, are set up, fail, end ---- */

/*
 * A listener opens (-> LISTEN) or closes (LISTEN -> CLOSE). Every accepted
 * connection also shows LISTEN -> SYN_RECV (its socket is cloned from the
 * listener's): that one leaves the listener where it is.
 */
static __always_inline void on_listener(struct trace_event_raw_inet_sock_set_state *ctx)
{
	struct listen_key lk = {.netns = sock_netns((struct sock *)ctx->skaddr),
				.port = ctx->sport};
	__u8 one = 1;

	if (ctx->newstate == TCP_LISTEN_)
		bpf_map_update_elem(&listeners, &lk, &one, BPF_ANY);
	else if (ctx->newstate == TCP_CLOSE_)
		bpf_map_delete_elem(&listeners, &lk);
}

/*
 * A connection begins: connect() (-> SYN_SENT; the source port may still be
 * 0), or accept() will return it (SYN_RECV -> ESTABLISHED). It gets a way,
 * started afresh, with its role.
 */
static __always_inline void on_conn_begin(struct trace_event_raw_inet_sock_set_state *ctx,
					  __u64 key)
{
	struct sock *sk = (struct sock *)ctx->skaddr;
	struct mp_tuple t = {};
	struct sock_slot *s;
	__u8 role;

	read_tuple(sk, &t);
	role = ctx->newstate == TCP_SYN_SENT_ ? MP_ROLE_CLIENT : MP_ROLE_SERVER;
	s = sock_find(key);
	if (s) /* a reused struct sock whose close we missed: a new connection */
		init_slot(s, key, role, 0, &t);
	else
		s = track(key, role, 0, &t);
	if (!s || !measure_connections)
		return;
	if (role == MP_ROLE_CLIENT) {
		/* connect(): the process is here, so the filter can be decided for the set-up (the
		 * local port is not chosen yet) */
		s->st.connect_wanted = filter_pass(sk, 0, t.rport);
	} else {
		/* the first RTT sample of an accepted socket is SYN-ACK sent -> this ACK
		 * (tcp_synack_rtt_meas) */
		__u64 us = tcp_srtt_us(sk);

		s->st.setup_ns = us ? us * 1000 : 0;
	}
}

/* A client's connection is set up (SYN_SENT -> ESTABLISHED): its source port is known now. */
static __always_inline void on_conn_established(struct trace_event_raw_inet_sock_set_state *ctx,
						struct sock_state *st)
{
	struct sock *sk = (struct sock *)ctx->skaddr;

	read_tuple(sk, &st->tuple);
	if (measure_connections && st->connect_wanted && st->role == MP_ROLE_CLIENT) {
		st->setup_ns = bpf_ktime_get_ns() - st->first_ns;
		emit_measure(ctx, sk, st, MP_METRIC_SETUP, MP_RESULT_OK, st->setup_ns, 0);
	}
}

/*
 * A client's connection closes (-> CLOSE), measured (connection-tracker):
 * if connect() failed, or it was reset before the application used it, a
 * MP_METRIC_CONNECT_FAIL record says why.
 */
static __always_inline void on_connect_failed(struct trace_event_raw_inet_sock_set_state *ctx,
					      struct sock_state *st)
{
	struct sock *sk = (struct sock *)ctx->skaddr;
	__u32 err = BPF_CORE_READ(sk, sk_err);

	if (ctx->oldstate == TCP_SYN_SENT_) {
		/* the application gave up (no error) while its SYNs went unanswered: a time-out
		 * too */
		__u8 cause = connect_result(err);

		if (cause == MP_RESULT_ABORTED &&
		    BPF_CORE_READ((struct inet_connection_sock *)sk, icsk_retransmits) > 0)
			cause = MP_RESULT_TIMEOUT;
		read_tuple(sk, &st->tuple);
		emit_measure(ctx, sk, st, MP_METRIC_CONNECT_FAIL, cause,
			     bpf_ktime_get_ns() - st->first_ns, err);
	} else if (err == 104 && !st->opened && st->requests == 0) {
		/* reset after the SYN-ACK, before the application used the connection */
		emit_measure(ctx, sk, st, MP_METRIC_CONNECT_FAIL, MP_RESULT_RESET,
			     bpf_ktime_get_ns() - st->first_ns, err);
	}
}

/* A connection ends (-> CLOSE): its close record if a process used it; its way is freed. */
static __always_inline void on_conn_close(struct trace_event_raw_inet_sock_set_state *ctx,
					  struct sock_slot *s, __u64 key)
{
	struct sock_state *st = &s->st;

	if (st->opened)
		emit_close(ctx, (struct sock *)ctx->skaddr, st);
	way_swap(&s->sk, key, 0); /* free the way, unless already reused */
	if (!st->ignored)
		stat_inc(MP_STAT_CLEANUP);
}

SEC("tracepoint/sock/inet_sock_set_state")
int latency_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	__u64 key = (__u64)ctx->skaddr;
	struct sock_slot *s;
	struct sock_state *st;

	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	if (ctx->newstate == TCP_LISTEN_ || ctx->oldstate == TCP_LISTEN_) {
		on_listener(ctx);
		return 0;
	}
	if (ctx->newstate == TCP_SYN_SENT_ ||
	    (ctx->oldstate == TCP_SYN_RECV_ && ctx->newstate == TCP_ESTABLISHED_)) {
		on_conn_begin(ctx, key);
		return 0;
	}
	s = sock_find(key);
	if (!s)
		return 0;
	st = &s->st;
	if (ctx->oldstate == TCP_SYN_SENT_ && ctx->newstate == TCP_ESTABLISHED_) {
		on_conn_established(ctx, st);
		return 0;
	}
	if (ctx->newstate != TCP_CLOSE_)
		return 0;
	if (measure_connections && st->connect_wanted && st->role == MP_ROLE_CLIENT)
		on_connect_failed(ctx, st);
	on_conn_close(ctx, s, key);
	return 0;
}
