/* SPDX-License-Identifier: GPL-2.0 OR MIT */
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
 */
#ifndef MESHPROBE_TLS_BPF_H
#define MESHPROBE_TLS_BPF_H

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
		__u32 want = d->hdr_seq + d->have;
		__s32 off = (__s32)(want - seq);
		__u32 take, need;
		__u64 part = 0;
		__u8 type, have;
		__u32 len, rec_seq;

		if (off < 0) {
			/* starts beyond the byte wanted: a reordered or missed segment */
			stat_inc(MP_STAT_TLS_GAP);
			return TLS_WALK_OK;
		}
		if ((__u32)off >= plen) {
			walked = true; /* the next header is further on */
			break;
		}
		have = d->have;
		if (have > 4)
			return TLS_WALK_LOST;
		need = 5 - have;
		take = plen - off;
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
			return TLS_WALK_LOST;
		barrier_var(take);
		if (bpf_skb_load_bytes(skb, base + off, &part, take + 1) < 0)
			return TLS_WALK_LOST;
		take += 1;
		d->hdr |= part << (8 * have);
		if (take < need) {
			/* the header goes on in the next segment */
			d->have = have + take;
			stat_inc(MP_STAT_TLS_SPLIT_HDR);
			walked = true;
			break;
		}
		type = d->hdr & 0xff;
		len = (((d->hdr >> 24) & 0xff) << 8) | ((d->hdr >> 32) & 0xff);
		if (type < TLS_REC_CCS || type > TLS_REC_HEARTBEAT || ((d->hdr >> 8) & 0xff) != 3 ||
		    len > TLS_REC_MAX_LEN)
			return TLS_WALK_LOST;
		rec_seq = d->hdr_seq;
		d->hdr_seq = rec_seq + 5 + len;
		d->have = 0;
		d->hdr = 0;

		if (srv && d->records == 0 && type == TLS_REC_HANDSHAKE) {
			__s32 body = (__s32)(rec_seq + 5 - seq);
			if (body >= 0 && (__u32)body < plen)
				sh_off = base + body + 1; /* +1: 0 means none */
			else if (!f->version)
				stat_inc(MP_STAT_TLS_NO_VERSION); /* its body starts in the next
								     segment */
		}
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

static __always_inline void tls_emit(struct __sk_buff *skb, struct tls_key *k, struct tls_flow *f,
				     __u64 now, struct tcp_sock *tp)
{
	struct mp_measure_rec r = {};
	struct mp_tuple t = {};
#ifdef MP_TLS_SOCK_LOOKUP
	/*
	 * The includer's socket table (keyed by the socket's address, read here
	 * as a number) says whether the socket is inside --filter and when it
	 * became ESTABLISHED.
	 */
	void *p = tp;
	__u64 key = 0, est;

	bpf_probe_read_kernel(&key, sizeof(key), &p);
	if (!MP_TLS_SOCK_WANTED(key))
		return;
#endif

	r.hdr.kind = MP_REC_MEASURE;
	r.hdr.version = MP_REC_VERSION;
	r.hdr.role = f->role;
	r.value = now - f->start_ns;
	r.at_ns = now;
	r.netns = k->netns;
	r.metric = MP_METRIC_TLS;
	r.detail = f->version ? f->version - 1 : 0; /* TLS 1.x: x (1.0 reads as 0, unknown) */
	r.result = r.detail;			    /* counts per (metric, result): per version */
	/*
	 * The socket's family and addresses, as the latency records have them
	 * (an AF_INET6 socket talking IPv4: family 10, ::ffff:a.b.c.d). The
	 * packet's, if the socket is not this connection's (a listener).
	 */
	read_tuple((struct sock *)tp, &t);
	if (t.lport == k->lport && t.rport == k->rport &&
	    (t.family == AF_INET || t.family == AF_INET6)) {
		r.hdr.family = t.family;
		r.lport = t.lport;
		r.rport = t.rport;
		__builtin_memcpy(r.raddr, t.raddr, 16);
	} else {
		r.hdr.family = f->family;
		r.lport = k->lport;
		r.rport = k->rport;
		__builtin_memcpy(r.raddr, k->raddr, 16);
	}
	emit(skb, &r, sizeof(r));
	stat_inc(MP_STAT_TLS_DONE);
#ifdef MP_TLS_SOCK_LOOKUP
	{
		/* from ESTABLISHED to now: what the application waited after connect() (or
		 * accept()) */
		est = MP_TLS_SOCK_LOOKUP(key);
		if (est && est <= now) {
			r.value = now - est;
			r.metric = MP_METRIC_TLS_CONNECT;
			emit(skb, &r, sizeof(r));
		}
	}
#endif
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

static __always_inline int tls_skb(struct __sk_buff *skb, bool egress)
{
	struct tls_key k = {};
	struct tls_flow *f;
	struct bpf_sock *bsk;
	struct tls_sk *sks;
	struct tcp_sock *tp;
	__u8 b0, family, tcpflags;
	__u32 l3len, l4off, tcplen, seq, plen, base, skblen;
	__u8 tcph[20];
	__u64 now;

	/* the fast path: a socket known plain, or done, before anything is read */
	bsk = skb->sk;
	if (!bsk)
		return 1;
	sks = bpf_sk_storage_get(&tls_sk, bsk, 0, 0);
	if (sks && sks->state >= TLS_SK_PLAIN)
		return 1;

	skblen = skb->len;
	if (bpf_skb_load_bytes(skb, 0, &b0, 1) < 0)
		return 1;
	if ((b0 >> 4) == 4) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)) < 0)
			return 1;
		if (ip.protocol != IPPROTO_TCP || (bpf_ntohs(ip.frag_off) & 0x3fff))
			return 1;
		l3len = (__u32)ip.ihl * 4;
		family = MP_AF_INET;
		if (egress) {
			__builtin_memcpy(k.laddr, &ip.saddr, 4);
			__builtin_memcpy(k.raddr, &ip.daddr, 4);
		} else {
			__builtin_memcpy(k.laddr, &ip.daddr, 4);
			__builtin_memcpy(k.raddr, &ip.saddr, 4);
		}
	} else if ((b0 >> 4) == 6) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)) < 0)
			return 1;
		if (ip6.nexthdr != IPPROTO_TCP)
			return 1;
		l3len = sizeof(ip6);
		family = MP_AF_INET6;
		if (egress) {
			__builtin_memcpy(k.laddr, &ip6.saddr, 16);
			__builtin_memcpy(k.raddr, &ip6.daddr, 16);
		} else {
			__builtin_memcpy(k.laddr, &ip6.daddr, 16);
			__builtin_memcpy(k.raddr, &ip6.saddr, 16);
		}
	} else {
		return 1;
	}
	l4off = l3len;
	if (bpf_skb_load_bytes(skb, l4off, tcph, sizeof(tcph)) < 0)
		return 1;
	tcplen = (__u32)(tcph[12] >> 4) * 4;
	tcpflags = tcph[13];
	if (tcplen < 20 || skblen < l4off + tcplen)
		return 1;
	plen = skblen - l4off - tcplen;
	base = l4off + tcplen;
	if (plen == 0 && !(tcpflags & (TCPF_FIN_ | TCPF_SYN_ | TCPF_RST_)))
		return 1; /* a pure ACK */

	tp = bpf_skc_to_tcp_sock(bsk);
	if (!tp)
		return 1;
	k.netns = BPF_CORE_READ((struct sock *)tp, __sk_common.skc_net.net, ns.inum);
	{
		__u16 sport = ((__u16)tcph[0] << 8) | tcph[1];
		__u16 dport = ((__u16)tcph[2] << 8) | tcph[3];
		k.lport = egress ? sport : dport;
		k.rport = egress ? dport : sport;
	}
	seq = ((__u32)tcph[4] << 24) | ((__u32)tcph[5] << 16) | ((__u32)tcph[6] << 8) | tcph[7];
	if (tcpflags & TCPF_SYN_)
		seq++; /* data in a SYN (fast open) starts after it */

	/*
	 * The entry is keyed by the packet's addresses, not the socket: a
	 * server's ClientHello may be filtered against the listener (in the
	 * client's ACK, or a fast open SYN), the rest against the new socket.
	 */
	f = bpf_map_lookup_elem(&tls_flows, &k);
	if (f && (tcpflags & (TCPF_SYN_ | TCPF_RST_))) {
		/* a new connection on the same addresses, or a reset: drop the old entry */
		bpf_map_delete_elem(&tls_flows, &k);
		stat_inc(MP_STAT_TLS_ABORTED);
		f = NULL;
		if (tcpflags & TCPF_RST_) {
			tls_sk_mark(bsk, sks, TLS_SK_DONE);
			return 1;
		}
	}
	if (!f) {
		struct tls_flow nf = {};

		if (plen == 0)
			return 1;
		if (!tls_is_client_hello(skb, base, plen)) {
			/* plain so far, or a handshake this probe has stopped following */
			if (sks && sks->state == TLS_SK_HANDSHAKE)
				tls_sk_mark(bsk, sks, TLS_SK_DONE);
			else
				tls_sk_plain_seen(bsk, sks);
			return 1;
		}
		now = bpf_ktime_get_ns();
		nf.start_ns = now;
		nf.role = egress ? MP_ROLE_CLIENT : MP_ROLE_SERVER;
		nf.family = family;
		if (bpf_map_update_elem(&tls_flows, &k, &nf, BPF_ANY) < 0)
			return 1;
		f = bpf_map_lookup_elem(&tls_flows, &k);
		if (!f)
			return 1;
		stat_inc(MP_STAT_TLS_HELLO);
		tls_sk_mark(bsk, sks, TLS_SK_HANDSHAKE);
	} else {
		now = bpf_ktime_get_ns();
	}

	if (plen > 0) {
		struct tls_dir *d = egress ? &f->tx : &f->rx;
		struct tls_dir *o = egress ? &f->rx : &f->tx;
		/* the ClientHello goes client -> server; the other way is the server's */
		bool srv = (f->role == MP_ROLE_CLIENT) != egress;
		int ret;

		if (!d->synced && !srv) {
			/* the ClientHello's own direction: synced at the ClientHello */
			d->synced = 1;
			d->hdr_seq = seq;
		}
		ret = tls_walk(skb, f, d, o, srv, base, seq, plen);
		if (ret == TLS_WALK_LOST) {
			bpf_map_delete_elem(&tls_flows, &k);
			stat_inc(MP_STAT_TLS_LOST_SYNC);
			tls_sk_mark(bsk, sks, TLS_SK_DONE);
			return 1;
		}
		if (tls_done(f)) {
			tls_emit(skb, &k, f, now, tp);
			bpf_map_delete_elem(&tls_flows, &k);
			tls_sk_mark(bsk, sks, TLS_SK_DONE);
			return 1;
		}
	}
	if (tcpflags & TCPF_FIN_) {
		bpf_map_delete_elem(&tls_flows, &k);
		stat_inc(MP_STAT_TLS_ABORTED);
		tls_sk_mark(bsk, sks, TLS_SK_DONE);
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

/* ---- libssl uprobes ---- */

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
	struct mp_measure_rec r = {};
	__u64 now;

	if (!sslp)
		return 0;
	k.ssl = *sslp;
	bpf_map_delete_elem(&tls_ssl_call, &id);
	if ((int)ret != 1)
		return 0; /* WANT_READ/WANT_WRITE: called again; or failed */
	s = bpf_map_lookup_elem(&tls_ssl, &k);
	if (!s || s->done || !s->start_ns)
		return 0;
#ifdef MESHPROBE_FILTER_BPF_H
	/* no socket here: --filter's port and netns cannot select it, its process conditions can */
	if (!filter_pass(NULL, 0, 0))
		return 0;
#endif
	now = bpf_ktime_get_ns();
	r.hdr.kind = MP_REC_MEASURE;
	r.hdr.version = MP_REC_VERSION;
	r.hdr.role = s->role;
	r.hdr.tgid = id >> 32;
	r.value = now - s->start_ns;
	r.at_ns = now;
	{
		struct task_struct *task = (struct task_struct *)bpf_get_current_task();
		r.netns = BPF_CORE_READ(task, nsproxy, net_ns, ns.inum);
	}
	r.metric = MP_METRIC_TLS_LIBSSL;
	r.result = MP_RESULT_OK;
	s->done = 1;
	s->start_ns = 0;
	emit(ctx, &r, sizeof(r));
	stat_inc(MP_STAT_TLS_LIBSSL_DONE);
	if (!r.hdr.role)
		stat_inc(MP_STAT_TLS_LIBSSL_NO_ROLE);
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

#endif
