/* SPDX-License-Identifier: MIT */
/*
 * The records the BPF programs emit into the perf event array, the map keys
 * and values user space reads or writes, and the counters they keep. This
 * header is the single definition of each layout: scripts/gen-layout.mjs
 * writes src/generated/layout.ts and assembly/generated/layout.ts from it
 * (values from the C compiler); run it after any change here, and name every
 * padding byte (the generator refuses implicit padding). A "N:" at the start
 * of a field's comment and "N bytes" before a struct are checked too.
 *
 * All integers are little-endian. Records arrive in the perf ring after a
 * 4-byte raw-size field, so fields are only 4-byte aligned in the ring:
 * readers must not use aligned/atomic loads on record fields.
 */
#ifndef MESHPROBE_RECORDS_H
#define MESHPROBE_RECORDS_H

#define MP_REC_VERSION 1

/* record kinds (first byte of every record) */
#define MP_REC_LATENCY	  1 /* one finished request/response exchange */
#define MP_REC_CONN_OPEN  2 /* first time a tracked socket is used by a process */
#define MP_REC_CONN_CLOSE 3 /* a tracked socket reached TCP_CLOSE */

/* socket roles */
#define MP_ROLE_UNKNOWN 0
#define MP_ROLE_CLIENT	1 /* connect()ed: sends a request, then reads */
#define MP_ROLE_SERVER	2 /* accept()ed: reads a request, then answers */

#define MP_REC_MEASURE                                                                             \
	4 /* one figure of a connection's life (connection-tracker): set-up, TLS, lifetime... */

/* what an mp_measure_rec measures (metric); values are ns unless said otherwise */
#define MP_METRIC_SETUP                                                                            \
	1 /* TCP set-up: client SYN sent -> SYN-ACK received; server SYN-ACK sent -> final ACK */
#define MP_METRIC_CONNECT_FAIL                                                                     \
	2 /* a connect that failed: time from SYN to the failure; result = cause */
#define MP_METRIC_TLS                                                                              \
	3 /* TLS handshake seen in the socket's TLS records: ClientHello -> done on this side */
#define MP_METRIC_TLS_LIBSSL                                                                       \
	4 /* TLS handshake timed by uprobes on libssl (SSL_do_handshake/connect/accept) */
#define MP_METRIC_LIFETIME 5 /* a closed connection: first seen -> close */
#define MP_METRIC_REQUESTS 6 /* a closed connection: its exchanges (a count, not ns) */
#define MP_METRIC_IDLE                                                                             \
	7 /* the gap between an exchange's end and the next one's start on a connection */
#define MP_METRIC_TLS_CONNECT                                                                      \
	8 /* TCP connected (ESTABLISHED) -> TLS handshake done on this side: what the              \
	     application waits for after connect(), library set-up included */
#define MP_METRIC__COUNT 9

/* mp_measure_rec.result */
#define MP_RESULT_OK	  0
#define MP_RESULT_REFUSED 1 /* RST answered the SYN (ECONNREFUSED) */
#define MP_RESULT_TIMEOUT 2 /* no answer: SYN retries ran out (ETIMEDOUT) */
#define MP_RESULT_RESET	  3 /* reset after SYN-ACK, before the application used it (ECONNRESET) */
#define MP_RESULT_UNREACH 4 /* ICMP unreachable (EHOSTUNREACH, ENETUNREACH) */
#define MP_RESULT_ABORTED 5 /* closed by the application before it connected (no error) */
#define MP_RESULT_OTHER	  6
#define MP_RESULT__COUNT  7

/* flags in mp_conn_open_rec.flags and mp_conn_close_rec.flags */
#define MP_CONN_F_ROLE_INFERRED                                                                    \
	1 /* connection predates the probe: role taken from its first read/write */

/* address families as the kernel numbers them */
#define MP_AF_INET  2
#define MP_AF_INET6 10

/* 16 bytes, at the start of every record */
struct mp_rec_hdr {
	__u8 kind;     /* MP_REC_* */
	__u8 version;  /* MP_REC_VERSION */
	__u8 role;     /* MP_ROLE_* */
	__u8 family;   /* MP_AF_* ; IPv4 addresses use the first 4 bytes of the 16 */
	__u32 tgid;    /* process that did the read/write that finished the record */
	__u64 conn_id; /* probe-unique id of the socket, never reused within one load */
};

/* 64 bytes */
struct mp_latency_rec {
	struct mp_rec_hdr hdr; /* 0 */
	__u64 end_ns;	       /* 16: CLOCK_MONOTONIC when the exchange finished */
	__u64 latency_ns;      /* 24: client view or server view, per hdr.role */
	__u32 srtt_us; /* 32: the kernel's smoothed RTT then, read on exchanges 1, 9, 17, ...; 0 on
			  the others */
	__u32 min_rtt_us; /* 36: the kernel's windowed minimum RTT then (tcp_sock.rtt_min, ss -i's
			     minrtt), read with srtt_us; 0 when not read or not known yet */
	__u16 lport;	  /* 40: local port, host order */
	__u16 rport;	  /* 42: remote port, host order */
	__u32 netns; /* 44: network namespace inode of the socket (servers are told apart by it) */
	__u8 raddr[16]; /* 48: remote address */
};

/* 96 bytes */
struct mp_conn_open_rec {
	struct mp_rec_hdr hdr; /* 0 */
	__u64 start_ns;	       /* 16: when the probe first saw the socket */
	__u64 cgroup_id;       /* 24: cgroup v2 id of the process */
	__u32 pid;	       /* 32: thread id of the process */
	__u32 netns;	       /* 36: network namespace inode number */
	__u16 lport;	       /* 40 */
	__u16 rport;	       /* 42 */
	__u32 flags;	       /* 44: MP_CONN_F_* */
	__u8 laddr[16];	       /* 48 */
	__u8 raddr[16];	       /* 64 */
	char comm[16];	       /* 80 */
};

/* 64 bytes */
struct mp_conn_close_rec {
	struct mp_rec_hdr hdr; /* 0 */
	__u64 end_ns;	       /* 16 */
	__u64 duration_ns;     /* 24: first seen to close */
	__u32 requests;	       /* 32: exchanges finished on the socket */
	__u32 srtt_us;	       /* 36 */
	__u64 bytes_sent;      /* 40 */
	__u64 bytes_received;  /* 48 */
	__u32 flags;	       /* 56 */
	__u32 _pad;	       /* 60 */
};

/* 64 bytes */
struct mp_measure_rec {
	struct mp_rec_hdr hdr; /* 0 */
	__u64 value;	       /* 16: ns (or a count, per metric) */
	__u64 at_ns;	       /* 24: CLOCK_MONOTONIC when it ended */
	__u32 netns;	       /* 32: network namespace inode of the socket */
	__u16 lport;	       /* 36 */
	__u16 rport;	       /* 38 */
	__u8 metric;	       /* 40: MP_METRIC_* */
	__u8 result;	/* 41: MP_RESULT_*; for TLS metrics the minor version (2, 3; 0 unknown) */
	__u8 detail;	/* 42: TLS: minor version (2 = TLS 1.2, 3 = TLS 1.3), 0 if unknown */
	__u8 _pad;	/* 43 */
	__u32 err;	/* 44: the socket's error (errno) for failures */
	__u8 raddr[16]; /* 48 */
};

/*
 * Per-CPU counters kept by the kernel side (array map "stats", one __u64
 * each), in index order: X(NAME, "name") makes MP_STAT_NAME, and "name" is
 * what the reports call it (scripts/gen-layout.mjs copies both to
 * src/generated/layout.ts).
 */
#define MP_STATS(X)                                                                                \
	/* writes seen on tracked sockets */                                                       \
	X(SEND, "send")                                                                            \
	/* reads seen on tracked sockets */                                                        \
	X(RECV, "receive")                                                                         \
	/* tracked sockets closed (entry removed) */                                               \
	X(CLEANUP, "cleanup")                                                                      \
	/* sockets measured: used by a process and inside the filter */                            \
	X(TRACKED, "tracked")                                                                      \
	/* entries pushed out of the full LRU table */                                             \
	X(EVICTED, "evicted")                                                                      \
	/* bpf_perf_event_output failed (ring full) */                                             \
	X(OUTPUT_FAIL, "output_failures")                                                          \
	/* sockets skipped by the in-kernel filter */                                              \
	X(FILTERED, "filtered")                                                                    \
	/* latency records emitted */                                                              \
	X(EMITTED, "emitted")                                                                      \
	/* exchanges dropped as inconsistent (socket taken over mid-exchange) */                   \
	X(DISCARDED, "discarded")                                                                  \
	/* client-side exchanges finished but not measured (--sample-rate) */                      \
	X(UNSAMPLED_CLIENT, "unsampled_client")                                                    \
	/* server-side exchanges finished but not measured */                                      \
	X(UNSAMPLED_SERVER, "unsampled_server")                                                    \
	/* client-side exchanges measured (records emitted) */                                     \
	X(MEASURED_CLIENT, "measured_client")                                                      \
	/* server-side exchanges measured */                                                       \
	X(MEASURED_SERVER, "measured_server")                                                      \
	/* TLS (bpf/tls.bpf.c, connection-tracker): ClientHellos seen (one per side) */            \
	X(TLS_HELLO, "tls_hello")                                                                  \
	/* socket-level handshakes measured */                                                     \
	X(TLS_DONE, "tls_done")                                                                    \
	/* handshakes dropped: the record walk was lost */                                         \
	X(TLS_LOST_SYNC, "tls_lost_sync")                                                          \
	/* segments skipped: they start beyond the byte wanted */                                  \
	X(TLS_GAP, "tls_gap")                                                                      \
	/* record headers split across segments, reassembled */                                    \
	X(TLS_SPLIT_HDR, "tls_split_hdr")                                                          \
	/* connections closed or reused mid-handshake */                                           \
	X(TLS_ABORTED, "tls_aborted")                                                              \
	/* ServerHello not parsed: version from record behaviour */                                \
	X(TLS_NO_VERSION, "tls_no_version")                                                        \
	/* libssl handshakes measured */                                                           \
	X(TLS_LIBSSL_DONE, "tls_libssl_done")                                                      \
	/* libssl handshakes measured with role unknown */                                         \
	X(TLS_LIBSSL_NO_ROLE, "tls_libssl_no_role")                                                \
	/* client-side exchanges on a connection that carried one before */                        \
	X(REUSED_CLIENT, "reused_client")                                                          \
	/* server-side exchanges on a connection that carried one before */                        \
	X(REUSED_SERVER, "reused_server")                                                          \
	/* packet drops (bpf/drops.bpf.c, packet-drop-probe): kfree_skb hits inside the filter */  \
	X(DROP_SEEN, "drop_seen")                                                                  \
	/* kfree_skb hits left out by the in-kernel filter */                                      \
	X(DROP_FILTERED, "drop_filtered")                                                          \
	/* drops whose key did not fit the full "drops" map (still in SEEN) */                     \
	X(DROP_TABLE_FULL, "drop_table_full")                                                      \
	/* drops without a readable IP header: counted with zero addresses/ports */                \
	X(DROP_NO_HEADER, "drop_no_header")

#define MP_STAT_INDEX(name, report) MP_STAT_##name,
enum { MP_STATS(MP_STAT_INDEX) MP_STAT__COUNT };
#undef MP_STAT_INDEX

/* mp_drop_key.dir */
#define MP_DIR_UNKNOWN 0
#define MP_DIR_INGRESS 1 /* towards a local socket (or no socket: a packet arriving) */
#define MP_DIR_EGRESS  2 /* from a local socket */

/*
 * Packet drops (bpf/drops.bpf.c): per-CPU hash "drops", struct mp_drop_key ->
 * struct mp_drop_val, one entry per (where, why, who) of the kfree_skb
 * tracepoint. The local side:
 *  - a socket is known (skb->sk, else the tracepoint's rx_sk): local = the
 *    socket's own address and port, remote = its peer's, or, when the socket
 *    is not connected (a listener, an unconnected UDP socket), the other end
 *    of the packet; dir = EGRESS when the packet's source port is the
 *    socket's port (sent by it), else INGRESS;
 *  - a socket that is not AF_INET/AF_INET6, or none: the packet is taken
 *    as arriving, so local = its destination address and port, remote = its
 *    source; dir = INGRESS when the skb came in through a device
 *    (skb->skb_iif set), else UNKNOWN (e.g. a locally made packet without a
 *    socket, which reads the same way).
 * Ports are host order; addresses as on the wire, IPv4 in the first 4 bytes.
 * Without an IP header (MP_STAT_DROP_NO_HEADER) family is 0 and addresses and
 * ports are zero.
 */
/* 56 bytes */
struct mp_drop_key {
	__u64 location; /* 0: kernel address of the kfree_skb caller (symbolize with /proc/kallsyms)
			 */
	__u32 reason; /* 8: enum skb_drop_reason (kernel BTF gives the names); 0 when the kernel has
			 none */
	__u32 netns;  /* 12: network namespace inode (socket's, else the device's) */
	__u16 lport;  /* 16: local port, host order */
	__u16 rport;  /* 18: remote port, host order */
	__u8 protocol;	/* 20: IPPROTO_* (L4); 0 when unknown */
	__u8 family;	/* 21: MP_AF_* ; 0 when no IP header */
	__u8 dir;	/* 22: MP_DIR_* */
	__u8 _pad;	/* 23 */
	__u8 laddr[16]; /* 24 */
	__u8 raddr[16]; /* 40 */
};

/* 16 bytes: value of "drops" and "pkts" */
struct mp_drop_val {
	__u64 packets; /* 0 */
	__u64 bytes; /* 8: sum of skb->len (drops: at the drop point, so headers already pulled are
			not in it) */
};

/*
 * Packets per local port (service), both directions, counted by cgroup_skb
 * programs on the cgroup v2 root: per-CPU hash "pkts", struct mp_pkt_key ->
 * struct mp_drop_val. The rate of drops per 1000 packets of a service.
 */
/* 8 bytes */
struct mp_pkt_key {
	__u32 netns;   /* 0 */
	__u16 lport;   /* 4: the local socket's port, host order */
	__u8 protocol; /* 6: IPPROTO_* */
	__u8 _pad;     /* 7 */
};

/*
 * Listening ports (bpf/latency.bpf.c): hash "listeners", struct listen_key ->
 * __u8 1. User space fills it at start (src/probes/latency.ts), the kernel
 * side keeps it current from TCP_LISTEN transitions.
 */
/* 8 bytes */
struct listen_key {
	__u32 netns; /* 0: network namespace inode number */
	__u16 port;  /* 4: local port, host order */
	__u16 _pad;  /* 6 */
};

#endif
