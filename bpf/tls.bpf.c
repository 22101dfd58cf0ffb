// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * TLS handshake time (connection-tracker), two sources, one record each:
 *
 * 1. MP_METRIC_TLS, from the TLS records on the wire, whatever the TLS
 *    library: cgroup_skb ingress and egress programs (attach both to the
 *    cgroup v2 root) see every packet of every local socket. Per local
 *    socket (key: netns + local and remote address and port, so both ends of
 *    a loopback connection are two entries) they walk the TLS record headers
 *    of both directions by TCP sequence number, from the ClientHello on:
 *      start  the ClientHello (record 0x16, handshake type 1) at the start of
 *             the socket's first payload segment, either way: sent -> this
 *             socket is the client, received -> the server;
 *      version  the ServerHello's supported_versions extension (or its
 *             legacy_version when it has no such extension), parsed when the
 *             segment holds it up to there; otherwise (cut earlier, in its
 *             extensions too) from the records: a 0x17 record from a side
 *             that has not sent ChangeCipherSpec + Finished is TLS 1.3, a
 *             0x16 after a 0x14 is the Finished of TLS <= 1.2;
 *      end    TLS 1.3: client when it sends its first 0x17 record after
 *             the server's encrypted flight (its Finished), server when it
 *             receives that record;
 *             TLS <= 1.2: when this side has both sent and received a
 *             Finished (0x16 after 0x14), so: full handshake, client when it
 *             receives the server's Finished, server when it sends its own;
 *             resumed (abbreviated), the other way round.
 *    Then the entry is removed. Entries live only during handshakes
 *    (tls_flows, LRU, 16384 by default).
 *    Fast path (tls_sk, socket storage): a socket is marked "plain" after
 *    TLS_PLAIN_AFTER payload segments with no ClientHello, and "done" once
 *    its handshake is measured (or given up: walk lost, closed, entry gone);
 *    every later packet of a marked socket costs one socket-storage lookup,
 *    before any header is read. The storage dies with the socket, so a new
 *    connection on the same addresses starts unmarked. Consequences: TLS that
 *    starts after more than TLS_PLAIN_AFTER plaintext segments (a long
 *    STARTTLS dialogue) is not seen; nor is anything after the first
 *    handshake: TLS <= 1.2 renegotiation (encrypted anyway), TLS 1.3
 *    post-handshake messages. Resumption is a new connection, so it is seen.
 *    Not marked: a listening socket (a client's ACK carrying data, or a fast
 *    open SYN, is filtered against the listener). Until marked (the
 *    ClientHello's socket until done), packets take the path below: parse
 *    IPv4/IPv6 and TCP, one hash lookup.
 *    A header split across two segments is reassembled. A record header that
 *    makes no sense, or more than TLS_MAX_RECS records in one segment, drop
 *    the entry (lost sync). A segment beyond the byte wanted (reordered on
 *    ingress, or data missed) is skipped and counted; if the header sat in
 *    it, that side's handshake is never finished (the entry goes on FIN/RST
 *    or LRU eviction). Retransmissions are recognised by sequence number.
 *    Not handled: TLS 1.3 0-RTT early data sent after the server's flight
 *    went out (it would end the handshake early; early data before it is
 *    told apart), QUIC, TLS over anything but TCP, IPv6 extension headers,
 *    IPv4 fragments.
 *    hdr.tgid is 0: the programs run in softirq or in whichever task sent
 *    the packet, so the current task says nothing about the socket's owner.
 *    The record's family, addresses and ports are the socket's (as in the
 *    latency records): an AF_INET6 socket talking IPv4 says family 10 and
 *    ::ffff:a.b.c.d, though its packets carry IPv4 headers. result and
 *    detail are both the minor version (2 = TLS 1.2, 3 = TLS 1.3, 0
 *    unknown), so counts per (metric, result) are counts per version; the same
 *    in the MP_METRIC_TLS_CONNECT record sent beside it (latency.bpf.c).
 *
 * 2. MP_METRIC_TLS_LIBSSL, from uprobes on OpenSSL's libssl (attach by
 *    function name to the library file, see src/kernel/libssl.ts):
 *      SSL_connect, SSL_accept, SSL_do_handshake  uprobe: tls_ssl_hs_client,
 *          tls_ssl_hs_server, tls_ssl_hs; uretprobe: tls_ssl_hs_ret (all three)
 *      SSL_set_connect_state, SSL_set_accept_state  uprobe: tls_ssl_set_client,
 *          tls_ssl_set_server (the role, for SSL_do_handshake)
 *      SSL_clear  uprobe tls_ssl_clear; SSL_free  uprobe tls_ssl_free
 *    Time from the first handshake call on an SSL* (per process) to the call
 *    that returns 1 (non-blocking callers return -1 WANT_READ/WANT_WRITE and
 *    call again). So it holds what libssl does in those calls around the
 *    wire exchange: building the ClientHello (key shares) on a client, and
 *    on a TLS 1.3 server the session tickets it writes after the client's
 *    Finished, in the same call. Role: client for SSL_connect or after SSL_set_connect_state,
 *    server for SSL_accept or after SSL_set_accept_state; 0 when none of
 *    those was seen (SSL_do_handshake on an SSL set up before the probe).
 *    A handshake that libssl runs inside SSL_read/SSL_write (openssl
 *    s_client does that) calls none of the three and is only seen by source 1.
 *    hdr.tgid: the process; netns: its network namespace; no addresses or
 *    ports, detail 0 (version unknown): SSL's layout is private to OpenSSL
 *    and the socket may hide behind a custom BIO (curl's has no fd).
 *
 * Counters: MP_STAT_TLS_* (records.h), in the `stats` map.
 *
 * A unit of its own, not an object: the BPF static linker joins it to a
 * host unit (latency.bpf.c, or tls_dev.bpf.c for the tests), which provides
 * what tls.bpf.h declares: the socket table's answers and --filter.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "common.bpf.h"
#include "tls.bpf.h"

/* ---- TLS records on the wire: the cgroup_skb programs ---- */

#define TLS_REC_CCS	  20 /* 0x14 */
#define TLS_REC_ALERT	  21
#define TLS_REC_HANDSHAKE 22 /* 0x16 */
#define TLS_REC_APPDATA	  23 /* 0x17 */
#define TLS_REC_HEARTBEAT 24
#define TLS_REC_MAX_LEN	  (16384 + 2048) /* TLSCiphertext.length bound */
#define TLS_MAX_RECS	  16		 /* record headers walked in one segment */
#define TLS_MAX_EXTS	  16		 /* ServerHello extensions walked */

#define TCPF_FIN_ 0x01
#define TCPF_SYN_ 0x02
#define TCPF_RST_ 0x04

/* the local view of a socket: both ends of a loopback connection are two keys */
struct tls_key {
	__u8 laddr[16];
	__u8 raddr[16];
	__u32 netns;
	__u16 lport; /* host order */
	__u16 rport;
};

/* one direction of the stream */
struct tls_dir {
	__u64 hdr;	     /* header bytes gathered so far, byte i at bits 8i */
	__u32 hdr_seq;	     /* TCP sequence number of the record header wanted next */
	__u8 have;	     /* bytes of it gathered (0..4; 5 is handled at once) */
	__u8 synced;	     /* hdr_seq is known */
	__u8 ccs;	     /* a ChangeCipherSpec went this way */
	__u8 fin;	     /* a handshake record after it: the Finished of TLS <= 1.2 */
	__u8 app;	     /* an application-data (0x17) record went this way */
	__u8 app_before_fin; /* ... before any Finished: TLS 1.3 */
	__u8 app_after_peer; /* ... after one came the other way: TLS 1.3's Finished, not 0-RTT
				early data */
	__u8 records;	     /* records seen, saturating */
};

struct tls_flow {
	__u64 start_ns;
	struct tls_dir tx;
	struct tls_dir rx;
	__u8 role;    /* MP_ROLE_CLIENT: sent the ClientHello; MP_ROLE_SERVER: received it */
	__u8 version; /* wire minor (0x03xx): 4 = TLS 1.3, 3 = 1.2, 2 = 1.1, 1 = 1.0; 0 unknown */
	__u8 family;
	__u8 _pad[5];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct tls_key);
	__type(value, struct tls_flow);
} tls_flows SEC(".maps");

/* A TCP segment as tls_skb() sees it (its addresses and ports are in the tls_key) */
struct tls_seg {
	__u32 seq;   /* sequence number of the payload's first byte */
	__u32 base;  /* packet offset of the payload */
	__u32 plen;  /* payload bytes */
	__u8 flags;  /* TCP flags (TCPF_*_) */
	__u8 family; /* MP_AF_INET, MP_AF_INET6 */
};

/* tls_sk: what is known of a socket (socket storage, freed with the socket) */
#define TLS_SK_HANDSHAKE 1 /* its first payload was a ClientHello: a handshake under way */
#define TLS_SK_PLAIN                                                                               \
	2 /* TLS_PLAIN_AFTER payload segments and no ClientHello: never looked at again */
#define TLS_SK_DONE 3 /* its handshake measured, or given up: never looked at again */

struct tls_sk {
	__u8 state;	 /* TLS_SK_*; 0 (or no storage): nothing decided yet */
	__u8 plain_segs; /* payload segments seen without a ClientHello */
};

/*
 * A socket is taken for plain after this many payload segments with no
 * ClientHello, not the first: TLS that starts a few messages in (STARTTLS,
 * PostgreSQL's SSLRequest) is still seen; keep-alive connections pay the
 * slow path for their first few segments only.
 */
#define TLS_PLAIN_AFTER 8

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct tls_sk);
} tls_sk SEC(".maps");

#define TLS_TCP_LISTEN 10 /* sk_state of a listening socket (BPF_TCP_LISTEN) */

/* Marks the socket; `s` is its storage when it has one already. Never a listening socket. */
static __always_inline void tls_sk_mark(struct bpf_sock *bsk, struct tls_sk *s, __u8 state)
{
	if (!s) {
		if (bsk->state == TLS_TCP_LISTEN)
			return;
		s = bpf_sk_storage_get(&tls_sk, bsk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!s)
			return; /* not a full socket, or out of memory: the slow path again next
				   time */
	}
	s->state = state;
}

/* One more payload segment without a ClientHello: plain once there were TLS_PLAIN_AFTER. */
static __always_inline void tls_sk_plain_seen(struct bpf_sock *bsk, struct tls_sk *s)
{
	if (!s) {
		if (bsk->state == TLS_TCP_LISTEN)
			return;
		s = bpf_sk_storage_get(&tls_sk, bsk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!s)
			return;
	}
	if (++s->plain_segs >= TLS_PLAIN_AFTER)
		s->state = TLS_SK_PLAIN;
}

/* a before b, modulo 2^32 */
static __always_inline bool tls_seq_before(__u32 a, __u32 b)
{
	return (__s32)(a - b) < 0;
}

/* wire minor of a 0x03xx protocol version (0x0304 -> 4 = TLS 1.3); 0 if not one */
static __always_inline __u8 tls_minor(__u16 v)
{
	if ((v >> 8) != 3 || (v & 0xff) == 0 || (v & 0xff) > 4)
		return 0;
	return v & 0xff;
}

/*
 * The ServerHello whose handshake message starts at packet offset `off`, in
 * a segment that ends at `end`: the version it chooses, 0 if this segment
 * does not tell (cut before the end of supported_versions, or before the
 * end of the extensions when that one is absent). legacy_version only when
 * the message is seen to have no supported_versions: a TLS 1.3 ServerHello
 * always carries it, and taking a cut one for TLS 1.2 would wait for 1.2's
 * two Finished messages forever.
 */
static __always_inline __u8 tls_server_hello_version(struct __sk_buff *skb, __u32 off, __u32 end)
{
	__u8 b[6];
	__u8 sid_len;
	__u16 legacy;
	__u32 p, msg_end, ext_end;
	int i;

	/* type(1) len(3) legacy_version(2) */
	if (off + 6 > end || bpf_skb_load_bytes(skb, off, b, 6) < 0 || b[0] != 2)
		return 0;
	legacy = ((__u16)b[4] << 8) | b[5];
	msg_end = off + 4 + (((__u32)b[1] << 16) | ((__u32)b[2] << 8) | b[3]);
	/* random(32), then the session id's length */
	if (off + 39 > end || bpf_skb_load_bytes(skb, off + 38, &sid_len, 1) < 0 || sid_len > 32)
		return 0;
	/* session id, cipher suite(2), compression(1), then the extensions' length(2) */
	p = off + 39 + sid_len + 3;
	if (p >= msg_end)
		return tls_minor(legacy); /* no extensions: TLS <= 1.2 */
	if (p + 2 > end || bpf_skb_load_bytes(skb, p, b, 2) < 0)
		return 0; /* cut before them */
	p += 2;
	ext_end = p + (((__u32)b[0] << 8) | b[1]);
	if (ext_end > msg_end)
		return 0; /* makes no sense */
	for (i = 0; i < TLS_MAX_EXTS; i++) {
		__u16 type, len;

		if (p >= ext_end)
			break;
		if (p + 4 > end || bpf_skb_load_bytes(skb, p, b, 4) < 0)
			return 0; /* cut inside the extensions */
		type = ((__u16)b[0] << 8) | b[1];
		len = ((__u16)b[2] << 8) | b[3];
		if (type == 0x002b) { /* supported_versions: the chosen one */
			if (len != 2 || p + 6 > end || bpf_skb_load_bytes(skb, p + 4, b, 2) < 0)
				return 0;
			return tls_minor(((__u16)b[0] << 8) | b[1]);
		}
		p += 4 + len;
	}
	if (p != ext_end)
		return 0; /* more extensions than walked, or lengths that make no sense */
	/* every extension seen, none of them supported_versions: TLS <= 1.2 */
	return tls_minor(legacy);
}

#define TLS_HDR_WHOLE 0 /* the 5 bytes of the header are in d->hdr */
#define TLS_HDR_PART  1 /* it goes on in the next segment */
#define TLS_HDR_LOST  2 /* the walk is lost */

/*
 * Gathers the record header wanted next in direction `d` from packet offset
 * `off`, where `avail` (> 0) bytes of this segment's payload are left.
 */
static __always_inline int tls_hdr_gather(struct __sk_buff *skb, struct tls_dir *d, __u32 off,
					  __u32 avail)
{
	__u8 have = d->have;
	__u32 take, need;
	__u64 part = 0;

	if (have > 4)
		return TLS_HDR_LOST;
	need = 5 - have;
	take = avail;
	if (take > need)
		take = need;
	/*
	 * 1..5 bytes, in a form every verifier can follow: before 6.8 a
	 * `take != 0` test does not raise the lower bound, and a size that
	 * may be 0 is refused ("invalid zero-sized read", 6.1 and 5.10).
	 */
	take -= 1;
	barrier_var(take);
	if (take > 4)
		return TLS_HDR_LOST;
	barrier_var(take);
	if (bpf_skb_load_bytes(skb, off, &part, take + 1) < 0)
		return TLS_HDR_LOST;
	take += 1;
	d->hdr |= part << (8 * have);
	if (take < need) {
		d->have = have + take;
		stat_inc(MP_STAT_TLS_SPLIT_HDR);
		return TLS_HDR_PART;
	}
	return TLS_HDR_WHOLE;
}

/*
 * The record whose header d->hdr holds whole: its type, 0 if the header
 * makes no sense. `d` then waits for the next record's header.
 */
static __always_inline __u8 tls_hdr_next(struct tls_dir *d)
{
	__u8 type = d->hdr & 0xff;
	__u32 len = (((d->hdr >> 24) & 0xff) << 8) | ((d->hdr >> 32) & 0xff);

	if (type < TLS_REC_CCS || type > TLS_REC_HEARTBEAT || ((d->hdr >> 8) & 0xff) != 3 ||
	    len > TLS_REC_MAX_LEN)
		return 0;
	d->hdr_seq += 5 + len;
	d->have = 0;
	d->hdr = 0;
	return type;
}

/* A record of type `type` went in direction `d` (`other`: the other direction). */
static __always_inline void tls_dir_note(struct tls_dir *d, struct tls_dir *other, __u8 type)
{
	if (d->records < 255)
		d->records++;
	if (type == TLS_REC_CCS) {
		d->ccs = 1;
	} else if (type == TLS_REC_HANDSHAKE) {
		if (d->ccs)
			d->fin = 1;
	} else if (type == TLS_REC_APPDATA) {
		if (!d->app && !d->fin)
			d->app_before_fin = 1;
		if (other->app)
			d->app_after_peer = 1;
		d->app = 1;
	}
}

#define TLS_WALK_OK   0
#define TLS_WALK_LOST 1

/*
 * Walks the record headers of one direction through a segment: payload at
 * packet offset `base`, `plen` bytes, first byte at sequence `seq`.
 * `srv` is the server-to-client direction (its first record is the ServerHello).
 */
static __always_inline int tls_walk(struct __sk_buff *skb, struct tls_flow *f, struct tls_dir *d,
				    struct tls_dir *other, bool srv, __u32 base, __u32 seq,
				    __u32 plen)
{
	__u32 sh_off = 0;    /* packet offset of the ServerHello's message, if in this segment */
	bool walked = false; /* left the loop at the end of what this segment holds */
	int i;

	if (!d->synced) {
		/* the first payload this way starts with a record (the ServerHello) */
		d->synced = 1;
		d->hdr_seq = seq;
		d->have = 0;
		d->hdr = 0;
	}
	for (i = 0; i < TLS_MAX_RECS; i++) {
		__s32 off = (__s32)(d->hdr_seq + d->have - seq);
		__u32 rec_seq;
		__u8 type;
		int got;

		if (off < 0) {
			/* starts beyond the byte wanted: a reordered or missed segment */
			stat_inc(MP_STAT_TLS_GAP);
			return TLS_WALK_OK;
		}
		if ((__u32)off >= plen) {
			walked = true; /* the next header is further on */
			break;
		}
		got = tls_hdr_gather(skb, d, base + off, plen - off);
		if (got == TLS_HDR_LOST)
			return TLS_WALK_LOST;
		if (got == TLS_HDR_PART) {
			walked = true;
			break;
		}
		rec_seq = d->hdr_seq;
		type = tls_hdr_next(d);
		if (!type)
			return TLS_WALK_LOST;
		if (srv && d->records == 0 && type == TLS_REC_HANDSHAKE) {
			__s32 body = (__s32)(rec_seq + 5 - seq);

			if (body >= 0 && (__u32)body < plen)
				sh_off = base + body + 1; /* +1: 0 means none */
			else if (!f->version)
				stat_inc(MP_STAT_TLS_NO_VERSION); /* its body starts in the next
								     segment */
		}
		tls_dir_note(d, other, type);
	}
	/* more records in this segment than walked */
	if (!walked && tls_seq_before(d->hdr_seq, seq + plen))
		return TLS_WALK_LOST;
	if (sh_off && !f->version) {
		f->version = tls_server_hello_version(skb, sh_off - 1, base + plen);
		if (!f->version)
			stat_inc(MP_STAT_TLS_NO_VERSION);
	}
	return TLS_WALK_OK;
}

/* Has this side finished its handshake? Infers the version if the ServerHello said nothing. */
static __always_inline bool tls_done(struct tls_flow *f)
{
	__u8 v = f->version;

	if (!v) {
		if (f->tx.app_before_fin || f->rx.app_before_fin)
			v = 4;
		else if (f->tx.fin || f->rx.fin)
			v = 3; /* <= 1.2: told as 1.2 */
		f->version = v;
	}
	if (v == 4) {
		/*
		 * The client's Finished is its first 0x17 record after the server's
		 * encrypted flight (0x17 records); early data (0-RTT) sent before that
		 * flight is not taken for it, on either side.
		 */
		if (f->role == MP_ROLE_CLIENT)
			return f->tx.app_after_peer;
		return f->rx.app_after_peer;
	}
	if (v)
		return f->tx.fin && f->rx.fin;
	return false;
}

/*
 * The socket's address as a number, as the host's socket table keys it (the
 * verifier lets no pointer be turned into a scalar otherwise).
 */
static __always_inline __u64 tls_sock_addr(struct tcp_sock *tp)
{
	void *p = tp;
	__u64 addr = 0;

	bpf_probe_read_kernel(&addr, sizeof(addr), &p);
	return addr;
}

/*
 * The socket's family, addresses and ports, as the latency records have them
 * (an AF_INET6 socket talking IPv4: family 10, ::ffff:a.b.c.d). The
 * packet's, if the socket is not this connection's (a listener).
 */
static __always_inline void tls_rec_tuple(struct mp_measure_rec *r, struct tls_key *k,
					  struct tls_flow *f, struct tcp_sock *tp)
{
	struct mp_tuple t = {};

	read_tuple((struct sock *)tp, &t);
	if (t.lport == k->lport && t.rport == k->rport &&
	    (t.family == AF_INET || t.family == AF_INET6)) {
		r->hdr.family = t.family;
		r->lport = t.lport;
		r->rport = t.rport;
		__builtin_memcpy(r->raddr, t.raddr, 16);
	} else {
		r->hdr.family = f->family;
		r->lport = k->lport;
		r->rport = k->rport;
		__builtin_memcpy(r->raddr, k->raddr, 16);
	}
}

/*
 * A handshake measured: its record, and beside it, when the host knows when
 * the socket became ESTABLISHED, the time from then to now: what the
 * application waited after connect() (or accept()).
 */
static __always_inline void tls_emit(struct __sk_buff *skb, struct tls_key *k, struct tls_flow *f,
				     __u64 now, struct tcp_sock *tp)
{
	struct mp_measure_rec r = {};
	__u64 sk = tls_sock_addr(tp), est;

	if (!tls_host_sock_wanted(sk))
		return;
	r.hdr.kind = MP_REC_MEASURE;
	r.hdr.version = MP_REC_VERSION;
	r.hdr.role = f->role;
	r.value = now - f->start_ns;
	r.at_ns = now;
	r.netns = k->netns;
	r.metric = MP_METRIC_TLS;
	r.detail = f->version ? f->version - 1 : 0; /* TLS 1.x: x (1.0 reads as 0, unknown) */
	r.result = r.detail;			    /* counts per (metric, result): per version */
	tls_rec_tuple(&r, k, f, tp);
	emit(skb, &r, sizeof(r));
	stat_inc(MP_STAT_TLS_DONE);
	est = tls_host_established_ns(sk);
	if (est && est <= now) {
		r.value = now - est;
		r.metric = MP_METRIC_TLS_CONNECT;
		emit(skb, &r, sizeof(r));
	}
}

/* Does the payload at `off` start with a ClientHello record? */
static __always_inline bool tls_is_client_hello(struct __sk_buff *skb, __u32 off, __u32 plen)
{
	__u8 b[6];
	__u16 len;

	if (plen < 6 || bpf_skb_load_bytes(skb, off, b, 6) < 0)
		return false;
	len = ((__u16)b[3] << 8) | b[4];
	/* type 0x16, version 3.1..3.4 (the record layer says 3.1 in a first ClientHello), handshake
	 * type 1 */
	return b[0] == TLS_REC_HANDSHAKE && b[1] == 3 && b[2] <= 4 && b[5] == 1 && len >= 4 &&
	       len <= TLS_REC_MAX_LEN;
}

/*
 * The IP header: the family, and the key's addresses (local first). Returns
 * the TCP header's offset; 0 if the packet is not TCP over IPv4 or IPv6 (or
 * an IPv4 fragment).
 */
static __always_inline __u32 tls_parse_ip(struct __sk_buff *skb, bool egress, struct tls_key *k,
					  struct tls_seg *seg)
{
	__u8 b0;

	if (bpf_skb_load_bytes(skb, 0, &b0, 1) < 0)
		return 0;
	if ((b0 >> 4) == 4) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)) < 0)
			return 0;
		if (ip.protocol != IPPROTO_TCP || (bpf_ntohs(ip.frag_off) & 0x3fff))
			return 0;
		seg->family = MP_AF_INET;
		__builtin_memcpy(k->laddr, egress ? &ip.saddr : &ip.daddr, 4);
		__builtin_memcpy(k->raddr, egress ? &ip.daddr : &ip.saddr, 4);
		return (__u32)ip.ihl * 4;
	}
	if ((b0 >> 4) == 6) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)) < 0)
			return 0;
		if (ip6.nexthdr != IPPROTO_TCP)
			return 0;
		seg->family = MP_AF_INET6;
		__builtin_memcpy(k->laddr, egress ? &ip6.saddr : &ip6.daddr, 16);
		__builtin_memcpy(k->raddr, egress ? &ip6.daddr : &ip6.saddr, 16);
		return sizeof(ip6);
	}
	return 0;
}

/*
 * The TCP header at packet offset `l4off`: the key's ports, the segment's
 * sequence number, flags and payload. False for a packet with nothing to
 * look at (a pure ACK, a header that makes no sense).
 */
static __always_inline bool tls_parse_tcp(struct __sk_buff *skb, __u32 l4off, bool egress,
					  struct tls_key *k, struct tls_seg *seg)
{
	__u8 tcph[20];
	__u32 tcplen, skblen = skb->len;
	__u16 sport, dport;

	if (bpf_skb_load_bytes(skb, l4off, tcph, sizeof(tcph)) < 0)
		return false;
	tcplen = (__u32)(tcph[12] >> 4) * 4;
	seg->flags = tcph[13];
	if (tcplen < 20 || skblen < l4off + tcplen)
		return false;
	seg->base = l4off + tcplen;
	seg->plen = skblen - seg->base;
	if (seg->plen == 0 && !(seg->flags & (TCPF_FIN_ | TCPF_SYN_ | TCPF_RST_)))
		return false; /* a pure ACK */
	sport = ((__u16)tcph[0] << 8) | tcph[1];
	dport = ((__u16)tcph[2] << 8) | tcph[3];
	k->lport = egress ? sport : dport;
	k->rport = egress ? dport : sport;
	seg->seq =
		((__u32)tcph[4] << 24) | ((__u32)tcph[5] << 16) | ((__u32)tcph[6] << 8) | tcph[7];
	if (seg->flags & TCPF_SYN_)
		seg->seq++; /* data in a SYN (fast open) starts after it */
	return true;
}

/* The handshake on `k` is over (measured, or given up): its entry goes, the socket is done. */
static __always_inline void tls_flow_end(struct tls_key *k, struct bpf_sock *bsk,
					 struct tls_sk *sks)
{
	bpf_map_delete_elem(&tls_flows, k);
	tls_sk_mark(bsk, sks, TLS_SK_DONE);
}

/*
 * A segment on addresses with no entry: a ClientHello starts one (returned);
 * anything else counts towards the socket being plain.
 */
static __always_inline struct tls_flow *tls_flow_start(struct __sk_buff *skb, struct tls_key *k,
						       struct tls_seg *seg, bool egress,
						       struct bpf_sock *bsk, struct tls_sk *sks)
{
	struct tls_flow nf = {};
	struct tls_flow *f;

	if (seg->plen == 0)
		return NULL;
	if (!tls_is_client_hello(skb, seg->base, seg->plen)) {
		/* plain so far, or a handshake this probe has stopped following */
		if (sks && sks->state == TLS_SK_HANDSHAKE)
			tls_sk_mark(bsk, sks, TLS_SK_DONE);
		else
			tls_sk_plain_seen(bsk, sks);
		return NULL;
	}
	nf.start_ns = bpf_ktime_get_ns();
	nf.role = egress ? MP_ROLE_CLIENT : MP_ROLE_SERVER;
	nf.family = seg->family;
	if (bpf_map_update_elem(&tls_flows, k, &nf, BPF_ANY) < 0)
		return NULL;
	f = bpf_map_lookup_elem(&tls_flows, k);
	if (!f)
		return NULL;
	stat_inc(MP_STAT_TLS_HELLO);
	tls_sk_mark(bsk, sks, TLS_SK_HANDSHAKE);
	return f;
}

/*
 * Follows the records of a segment's payload (`seg->plen` > 0) on the
 * handshake `f`, at time `now`. True when the handshake is over: measured
 * (its record sent), or the walk lost.
 */
static __always_inline bool tls_follow(struct __sk_buff *skb, struct tls_key *k, struct tls_flow *f,
				       struct tls_seg *seg, bool egress, __u64 now,
				       struct tcp_sock *tp, struct bpf_sock *bsk,
				       struct tls_sk *sks)
{
	struct tls_dir *d = egress ? &f->tx : &f->rx;
	struct tls_dir *o = egress ? &f->rx : &f->tx;
	/* the ClientHello goes client -> server; the other way is the server's */
	bool srv = (f->role == MP_ROLE_CLIENT) != egress;

	if (!d->synced && !srv) {
		/* the ClientHello's own direction: synced at the ClientHello */
		d->synced = 1;
		d->hdr_seq = seg->seq;
	}
	if (tls_walk(skb, f, d, o, srv, seg->base, seg->seq, seg->plen) == TLS_WALK_LOST) {
		stat_inc(MP_STAT_TLS_LOST_SYNC);
		tls_flow_end(k, bsk, sks);
		return true;
	}
	if (!tls_done(f))
		return false;
	tls_emit(skb, k, f, now, tp);
	tls_flow_end(k, bsk, sks);
	return true;
}

/* A packet of a local socket, received or sent (`egress`): always let through (1). */
static __always_inline int tls_skb(struct __sk_buff *skb, bool egress)
{
	struct tls_key k = {};
	struct tls_seg seg = {};
	struct bpf_sock *bsk;
	struct tls_sk *sks;
	struct tcp_sock *tp;
	struct tls_flow *f;
	__u32 l4off;
	__u64 now;

	/* the fast path: a socket known plain, or done, before anything is read */
	bsk = skb->sk;
	if (!bsk)
		return 1;
	sks = bpf_sk_storage_get(&tls_sk, bsk, 0, 0);
	if (sks && sks->state >= TLS_SK_PLAIN)
		return 1;

	l4off = tls_parse_ip(skb, egress, &k, &seg);
	if (!l4off || !tls_parse_tcp(skb, l4off, egress, &k, &seg))
		return 1;
	tp = bpf_skc_to_tcp_sock(bsk);
	if (!tp)
		return 1;
	k.netns = BPF_CORE_READ((struct sock *)tp, __sk_common.skc_net.net, ns.inum);

	/*
	 * The entry is keyed by the packet's addresses, not the socket: a
	 * server's ClientHello may be filtered against the listener (in the
	 * client's ACK, or a fast open SYN), the rest against the new socket.
	 */
	f = bpf_map_lookup_elem(&tls_flows, &k);
	if (f && (seg.flags & (TCPF_SYN_ | TCPF_RST_))) {
		/* a new connection on the same addresses, or a reset: drop the old entry */
		stat_inc(MP_STAT_TLS_ABORTED);
		if (seg.flags & TCPF_RST_) {
			tls_flow_end(&k, bsk, sks);
			return 1;
		}
		bpf_map_delete_elem(&tls_flows, &k);
		f = NULL;
	}
	if (!f) {
		f = tls_flow_start(skb, &k, &seg, egress, bsk, sks);
		if (!f)
			return 1;
		now = f->start_ns;
	} else {
		now = bpf_ktime_get_ns();
	}
	if (seg.plen > 0 && tls_follow(skb, &k, f, &seg, egress, now, tp, bsk, sks))
		return 1;
	if (seg.flags & TCPF_FIN_) {
		stat_inc(MP_STAT_TLS_ABORTED);
		tls_flow_end(&k, bsk, sks);
	}
	return 1;
}

SEC("cgroup_skb/ingress")
int tls_skb_ingress(struct __sk_buff *skb)
{
	return tls_skb(skb, false);
}

SEC("cgroup_skb/egress")
int tls_skb_egress(struct __sk_buff *skb)
{
	return tls_skb(skb, true);
}

/* ---- libssl: the uprobes ---- */

struct tls_ssl_key {
	__u64 ssl; /* the SSL* */
	__u32 tgid;
	__u32 _pad;
};

struct tls_ssl_state {
	__u64 start_ns; /* first handshake call; 0: none under way */
	__u8 role;
	__u8 done; /* measured: later calls (which return 1 at once) are not handshakes */
	__u8 _pad[6];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct tls_ssl_key);
	__type(value, struct tls_ssl_state);
} tls_ssl SEC(".maps");

/* thread -> the SSL* of the handshake call under way (for the uretprobe) */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} tls_ssl_call SEC(".maps");

static __always_inline void tls_ssl_set_role(__u64 ssl, __u8 role)
{
	struct tls_ssl_key k = {.ssl = ssl, .tgid = bpf_get_current_pid_tgid() >> 32};
	struct tls_ssl_state *s = bpf_map_lookup_elem(&tls_ssl, &k);

	if (s) {
		s->role = role;
		if (s->done) {
			/* set up again for a new handshake */
			s->done = 0;
			s->start_ns = 0;
		}
		/* else keep a start already taken: SSL_connect calls SSL_set_connect_state itself
		 */
		return;
	}
	struct tls_ssl_state ns = {.role = role};
	bpf_map_update_elem(&tls_ssl, &k, &ns, BPF_ANY);
}

static __always_inline void tls_ssl_enter(__u64 ssl, __u8 role)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct tls_ssl_key k = {.ssl = ssl, .tgid = id >> 32};
	struct tls_ssl_state *s;

	if (!ssl)
		return;
	s = bpf_map_lookup_elem(&tls_ssl, &k);
	if (!s) {
		struct tls_ssl_state ns = {.start_ns = bpf_ktime_get_ns(), .role = role};
		bpf_map_update_elem(&tls_ssl, &k, &ns, BPF_ANY);
	} else {
		if (s->done)
			return; /* a call on a finished handshake */
		if (!s->start_ns)
			s->start_ns = bpf_ktime_get_ns();
		if (role && !s->role)
			s->role = role;
	}
	bpf_map_update_elem(&tls_ssl_call, &id, &ssl, BPF_ANY);
}

/* A libssl handshake measured, in process `tgid`: its record. */
static __always_inline void tls_ssl_emit(void *ctx, struct tls_ssl_state *s, __u32 tgid)
{
	__u64 now = bpf_ktime_get_ns();
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct mp_measure_rec r = {};

	r.hdr.kind = MP_REC_MEASURE;
	r.hdr.version = MP_REC_VERSION;
	r.hdr.role = s->role;
	r.hdr.tgid = tgid;
	r.value = now - s->start_ns;
	r.at_ns = now;
	r.netns = BPF_CORE_READ(task, nsproxy, net_ns, ns.inum);
	r.metric = MP_METRIC_TLS_LIBSSL;
	r.result = MP_RESULT_OK;
	s->done = 1;
	s->start_ns = 0;
	emit(ctx, &r, sizeof(r));
	stat_inc(MP_STAT_TLS_LIBSSL_DONE);
	if (!r.hdr.role)
		stat_inc(MP_STAT_TLS_LIBSSL_NO_ROLE);
}

SEC("uprobe")
int BPF_KPROBE(tls_ssl_hs_client, void *ssl) /* SSL_connect */
{
	tls_ssl_enter((__u64)ssl, MP_ROLE_CLIENT);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(tls_ssl_hs_server, void *ssl) /* SSL_accept */
{
	tls_ssl_enter((__u64)ssl, MP_ROLE_SERVER);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(tls_ssl_hs, void *ssl) /* SSL_do_handshake */
{
	tls_ssl_enter((__u64)ssl, MP_ROLE_UNKNOWN);
	return 0;
}

/* the return of SSL_connect, SSL_accept or SSL_do_handshake (nested calls: the innermost returns
 * first) */
SEC("uretprobe")
int BPF_KRETPROBE(tls_ssl_hs_ret, long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u64 *sslp = bpf_map_lookup_elem(&tls_ssl_call, &id);
	struct tls_ssl_key k = {.tgid = id >> 32};
	struct tls_ssl_state *s;

	if (!sslp)
		return 0;
	k.ssl = *sslp;
	bpf_map_delete_elem(&tls_ssl_call, &id);
	if ((int)ret != 1)
		return 0; /* WANT_READ/WANT_WRITE: called again; or failed */
	s = bpf_map_lookup_elem(&tls_ssl, &k);
	if (!s || s->done || !s->start_ns)
		return 0;
	/* no socket here: --filter's port and netns cannot select it, its process conditions can */
	if (!tls_host_libssl_wanted())
		return 0;
	tls_ssl_emit(ctx, s, id >> 32);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(tls_ssl_set_client, void *ssl) /* SSL_set_connect_state */
{
	tls_ssl_set_role((__u64)ssl, MP_ROLE_CLIENT);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(tls_ssl_set_server, void *ssl) /* SSL_set_accept_state */
{
	tls_ssl_set_role((__u64)ssl, MP_ROLE_SERVER);
	return 0;
}

/*
 * SSL_clear: ready for a new handshake, same role. libssl's state machine
 * calls it itself at the start of every handshake, inside the first
 * SSL_do_handshake/SSL_connect/SSL_accept: that one must not reset the start.
 */
SEC("uprobe")
int BPF_KPROBE(tls_ssl_clear, void *ssl)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct tls_ssl_key k = {.ssl = (__u64)ssl, .tgid = id >> 32};
	struct tls_ssl_state *s;
	__u64 *in_call = bpf_map_lookup_elem(&tls_ssl_call, &id);

	if (in_call && *in_call == (__u64)ssl)
		return 0;
	s = bpf_map_lookup_elem(&tls_ssl, &k);
	if (s) {
		s->start_ns = 0;
		s->done = 0;
	}
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(tls_ssl_free, void *ssl) /* SSL_free: the address may be reused */
{
	struct tls_ssl_key k = {.ssl = (__u64)ssl, .tgid = bpf_get_current_pid_tgid() >> 32};

	bpf_map_delete_elem(&tls_ssl, &k);
	return 0;
}
