// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * packet-drop-probe, kernel side: every packet the kernel frees as dropped
 * (skb:kfree_skb, as a BTF-typed raw tracepoint where the kernel allows one,
 * else as a tracepoint) counted per (location, reason, netns, protocol,
 * local/remote address and port, direction) in the per-CPU hash "drops";
 * and, for a rate per 1000 packets, every packet of a local socket per
 * (netns, local port, protocol) in the per-CPU hash "pkts" (cgroup_skb
 * ingress/egress programs, attached to the cgroup v2 root).
 *
 * Layouts and the rule for the local side: bpf/records.h (mp_drop_key).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "common.bpf.h"
#include "filter.bpf.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#ifndef ETH_P_IP
#define ETH_P_IP 0x0800
#endif
#ifndef ETH_P_IPV6
#define ETH_P_IPV6 0x86DD
#endif
#ifndef IPPROTO_UDP
#define IPPROTO_UDP 17
#endif
#ifndef IPPROTO_UDPLITE
#define IPPROTO_UDPLITE 136
#endif
#ifndef IPPROTO_SCTP
#define IPPROTO_SCTP 132
#endif

/* max_entries: user space sets it before load (setMapMaxEntries) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct mp_drop_key);
	__type(value, struct mp_drop_val);
} drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct mp_pkt_key);
	__type(value, struct mp_drop_val);
} pkts SEC(".maps");

/* Adds one packet of `len` bytes to `key` in the per-CPU hash `map`; false when the map is full. */
static __always_inline bool count_packet(void *map, void *key, __u64 len)
{
	struct mp_drop_val *v = bpf_map_lookup_elem(map, key), init = {.packets = 1, .bytes = len};

	if (v) {
		v->packets++;
		v->bytes += len;
		return true;
	}
	if (bpf_map_update_elem(map, key, &init, BPF_NOEXIST) == 0)
		return true;
	/* another CPU made the entry meanwhile */
	v = bpf_map_lookup_elem(map, key);
	if (!v)
		return false;
	v->packets++;
	v->bytes += len;
	return true;
}

static __always_inline bool addr_zero(const __u8 a[16], __u8 family)
{
	const __u32 *w = (const __u32 *)a;

	if (family == AF_INET)
		return w[0] == 0;
	return (w[0] | w[1] | w[2] | w[3]) == 0;
}

static __always_inline bool has_ports(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_UDPLITE ||
	       proto == IPPROTO_SCTP;
}

/* What a dropped packet's own headers say: source and destination (not local and remote). */
struct drop_pkt {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport; /* host order; 0 when not read */
	__u16 dport;
	__u8 family; /* AF_INET, AF_INET6; 0: no IP header read (hdr false) */
	__u8 proto;
	bool hdr; /* the IP header was read */
};

/*
 * Reads the IP header at head + nh (skb->head, skb->network_header) into
 * `pkt`. Returns the transport header's offset: `th` (skb->transport_header)
 * when it is set and past the IP header, else right after the IP header;
 * 0xffff when there is none to read (no IP header, a later fragment).
 */
static __always_inline __u16 drop_read_ip(struct drop_pkt *pkt, unsigned char *head, __u16 eth,
					  __u16 nh, __u16 th)
{
	if (nh == 0xffff)
		return 0xffff;
	if (eth == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh) != 0 || ip.version != 4)
			return 0xffff;
		pkt->hdr = true;
		pkt->family = AF_INET;
		pkt->proto = ip.protocol;
		*(__u32 *)pkt->saddr = ip.saddr;
		*(__u32 *)pkt->daddr = ip.daddr;
		/* transport header unset, or not yet moved past the IP header (early drops) */
		if (th == 0xffff || th <= nh)
			th = nh + ip.ihl * 4;
		/* ports only in the first fragment */
		if (ip.frag_off & bpf_htons(0x1fff))
			th = 0xffff;
		return th;
	}
	if (eth == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh) != 0 || ip6.version != 6)
			return 0xffff;
		pkt->hdr = true;
		pkt->family = AF_INET6;
		pkt->proto = ip6.nexthdr; /* extension headers are not walked */
		__builtin_memcpy(pkt->saddr, &ip6.saddr, 16);
		__builtin_memcpy(pkt->daddr, &ip6.daddr, 16);
		if (th == 0xffff || th <= nh)
			th = nh + sizeof(struct ipv6hdr);
		return th;
	}
	return 0xffff;
}

/*
 * Kernel memory is read in one of two ways, chosen per program at compile
 * time (`btf`, a constant after inlining): through bpf_probe_read_kernel (a
 * helper call per field: the classic tracepoint, whose context holds plain
 * addresses), or by plain loads (the BTF-typed raw tracepoint, whose
 * arguments are typed pointers: the verifier turns each load into one
 * instruction that cannot fault). The fields are the same, CO-RE relocated.
 */
#define DROP_READ(btf, direct, ...) ((btf) ? (direct) : BPF_CORE_READ(__VA_ARGS__))

/* The packet's IP header, and the ports of TCP/UDP/SCTP. */
static __always_inline void drop_read_packet(struct sk_buff *skb, struct drop_pkt *pkt,
					     const bool btf)
{
	/* skb->protocol, big-endian (the tracepoint's copy is byte-swapped) */
	__u16 eth = DROP_READ(btf, skb->protocol, skb, protocol);
	unsigned char *head = DROP_READ(btf, skb->head, skb, head);
	__u16 nh = DROP_READ(btf, skb->network_header, skb, network_header);
	__u16 th = DROP_READ(btf, skb->transport_header, skb, transport_header);
	__u16 ports[2];

	th = drop_read_ip(pkt, head, eth, nh, th);
	if (!pkt->hdr || !has_ports(pkt->proto) || th == 0xffff)
		return;
	if (bpf_probe_read_kernel(ports, sizeof(ports), head + th) == 0) {
		pkt->sport = bpf_ntohs(ports[0]);
		pkt->dport = bpf_ntohs(ports[1]);
	}
}

/* A socket's family, ports and addresses (read_tuple, or its plain-load form). */
static __always_inline void drop_read_tuple(struct sock *sk, struct mp_tuple *t, const bool btf)
{
	if (!btf) {
		read_tuple(sk, t);
		return;
	}
	t->family = sk->__sk_common.skc_family;
	t->lport = sk->__sk_common.skc_num;
	t->rport = bpf_ntohs(sk->__sk_common.skc_dport);
	if (t->family == AF_INET6) {
		__builtin_memcpy(t->laddr, sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8, 16);
		__builtin_memcpy(t->raddr, sk->__sk_common.skc_v6_daddr.in6_u.u6_addr8, 16);
	} else {
		*(__u32 *)t->laddr = sk->__sk_common.skc_rcv_saddr;
		*(__u32 *)t->raddr = sk->__sk_common.skc_daddr;
	}
}

/*
 * The key's local and remote side from the packet's socket `sk`. False if
 * the socket is not an IPv4/IPv6 one (then the packet places it, if it can).
 */
static __always_inline bool drop_place_by_socket(struct mp_drop_key *key, struct sock *sk,
						 struct drop_pkt *pkt, const bool btf)
{
	__u16 fam = DROP_READ(btf, sk->__sk_common.skc_family, sk, __sk_common.skc_family);
	struct mp_tuple t = {};
	bool out;

	if (fam != AF_INET && fam != AF_INET6)
		return false;
	drop_read_tuple(sk, &t, btf);
	/* sent by the socket when the packet comes from its port */
	key->dir = pkt->hdr && pkt->sport == t.lport && pkt->dport != t.lport ? MP_DIR_EGRESS
									      : MP_DIR_INGRESS;
	if (pkt->hdr && pkt->sport == t.lport && pkt->dport == t.lport)
		key->dir = MP_DIR_UNKNOWN; /* talking to itself */
	key->lport = t.lport;
	key->rport = t.rport;
	key->family = t.family;
	__builtin_memcpy(key->laddr, t.laddr, 16);
	__builtin_memcpy(key->raddr, t.raddr, 16);
	if (!key->protocol)
		key->protocol = DROP_READ(btf, sk->sk_protocol, sk, sk_protocol);
	/* not connected (listener, unconnected UDP): the other end from the packet */
	if (!pkt->hdr || pkt->family != t.family)
		return true;
	out = key->dir == MP_DIR_EGRESS;
	if (!key->rport)
		key->rport = out ? pkt->dport : pkt->sport;
	if (addr_zero(key->raddr, key->family))
		__builtin_memcpy(key->raddr, out ? pkt->daddr : pkt->saddr, 16);
	if (addr_zero(key->laddr, key->family))
		__builtin_memcpy(key->laddr, out ? pkt->saddr : pkt->daddr, 16);
	return true;
}

/* No socket to place it (or not an IP one): taken as arriving, the destination is the local side.
 */
static __always_inline void drop_place_by_packet(struct mp_drop_key *key, struct sk_buff *skb,
						 struct drop_pkt *pkt, const bool btf)
{
	key->family = pkt->family;
	key->lport = pkt->dport;
	key->rport = pkt->sport;
	__builtin_memcpy(key->laddr, pkt->daddr, 16);
	__builtin_memcpy(key->raddr, pkt->saddr, 16);
	/* known to have come in through a device */
	key->dir = DROP_READ(btf, skb->skb_iif, skb, skb_iif) ? MP_DIR_INGRESS : MP_DIR_UNKNOWN;
}

/* The network namespace of a packet without a socket: its device's, 0 if it has none. */
static __always_inline __u32 drop_dev_netns(struct sk_buff *skb, const bool btf)
{
	struct net_device *dev = DROP_READ(btf, skb->dev, skb, dev);

	if (!dev)
		return 0;
	return DROP_READ(btf, dev->nd_net.net->ns.inum, dev, nd_net.net, ns.inum);
}

/* The drop inside the filter: counted, and (sampled) added to the breakdown. */
static __always_inline void drop_count(struct mp_drop_key *key, bool hdr, __u32 len)
{
	stat_inc(MP_STAT_DROP_SEEN); /* every drop inside the filter: the exact total */
	if (!hdr)
		stat_inc(MP_STAT_DROP_NO_HEADER);
	/* --sample-rate N: 1 drop in N goes into the breakdown, which is scaled back up */
	if (!sample_request())
		return;
	if (!count_packet(&drops, key, len))
		stat_inc(MP_STAT_DROP_TABLE_FULL);
}

/* One packet freed as dropped: placed, filtered, counted. */
static __always_inline int drop_seen(struct sk_buff *skb, __u64 location, __u32 reason,
				     struct sock *rx_sk, const bool btf)
{
	struct mp_drop_key key = {};
	struct drop_pkt pkt = {};
	struct sock *sk;
	bool placed = false;
	__u32 len;

	if (!skb)
		return 0;
	key.reason = reason;
	key.location = location;
	sk = DROP_READ(btf, skb->sk, skb, sk);
	if (!sk)
		sk = rx_sk;
	len = DROP_READ(btf, skb->len, skb, len);
	drop_read_packet(skb, &pkt, btf);
	key.protocol = pkt.proto;
	if (sk) {
		key.netns = DROP_READ(btf, sk->__sk_common.skc_net.net->ns.inum, sk,
				      __sk_common.skc_net.net, ns.inum);
		placed = drop_place_by_socket(&key, sk, &pkt, btf);
	} else {
		key.netns = drop_dev_netns(skb, btf);
	}
	if (!placed && pkt.hdr)
		drop_place_by_packet(&key, skb, &pkt, btf);

	if (!filter_pass_packet(key.lport, key.rport, key.netns)) {
		stat_inc(MP_STAT_DROP_FILTERED);
		return 0;
	}
	drop_count(&key, pkt.hdr, len);
	return 0;
}

/*
 * The tracepoint's fields tell which arguments this kernel's kfree_skb has:
 * reason appeared in 5.17, rx_sk in 6.11 (CO-RE: a field the running
 * kernel lacks makes its branch dead code, which the verifier skips).
 */
SEC("tracepoint/skb/kfree_skb")
int drops_kfree_skb(struct trace_event_raw_kfree_skb *ctx)
{
	__u32 reason = 0;
	struct sock *rx_sk = NULL;

	if (bpf_core_field_exists(ctx->reason))
		reason = ctx->reason;
	if (bpf_core_field_exists(ctx->rx_sk))
		rx_sk = ctx->rx_sk;
	return drop_seen(ctx->skbaddr, (__u64)ctx->location, reason, rx_sk, false);
}

/*
 * The same as a BTF-typed raw tracepoint: TP_PROTO(struct sk_buff *skb,
 * void *location[, enum skb_drop_reason reason[, struct sock *rx_sk]]).
 * The arguments are typed pointers, so the sk_buff and sock fields are plain
 * loads instead of a helper call each. No BTF trampoline is needed (unlike
 * fentry).
 */
SEC("tp_btf/kfree_skb")
int drops_kfree_skb_btf(__u64 *ctx)
{
	struct trace_event_raw_kfree_skb *tp = NULL; /* for the field checks only */
	__u32 reason = 0;
	struct sock *rx_sk = NULL;

	if (bpf_core_field_exists(tp->reason))
		reason = (__u32)ctx[2];
	if (bpf_core_field_exists(tp->rx_sk))
		rx_sk = (struct sock *)ctx[3];
	return drop_seen((struct sk_buff *)ctx[0], ctx[1], reason, rx_sk, true);
}

/*
 * A kfunc of 6.2+. Weak: on older kernels libbpf leaves it unresolved, and
 * only the programs that call it (drops_pkt_in/out) cannot load there; user
 * space then loads drops_pkt_in_port/out_port instead (src/probes/drops.ts).
 */
extern void *bpf_cast_to_kern_ctx(void *obj) __ksym __weak;

/*
 * Packets of local sockets, per (netns, local port, protocol): no parsing.
 * `with_netns`: the socket's network namespace, read through the kernel's
 * sk_buff (bpf_cast_to_kern_ctx, 6.2+); without it the key's netns is 0 and
 * the same port in two namespaces shares one count (user space says so).
 */
static __always_inline int count_socket_packet(struct __sk_buff *ctx, const bool with_netns)
{
	struct bpf_sock *bs = ctx->sk, *fs;
	struct mp_pkt_key key = {};

	if (!bs)
		return 1;
	key.lport = bs->src_port;
	fs = bpf_sk_fullsock(bs);
	/* request and time-wait sockets are TCP's */
	key.protocol = fs ? fs->protocol : IPPROTO_TCP;
	if (with_netns) {
		struct sk_buff *skb = bpf_cast_to_kern_ctx(ctx);

		key.netns = BPF_CORE_READ(skb, sk, __sk_common.skc_net.net, ns.inum);
	}
	/* only the services --filter keeps: the others' packets are not needed, nor their cost */
	if (with_netns ? !filter_pass_packet(key.lport, bpf_ntohs(bs->dst_port), key.netns)
		       : !filter_pass_packet_ports(key.lport, bpf_ntohs(bs->dst_port)))
		return 1;
	count_packet(&pkts, &key, ctx->len);
	return 1;
}

SEC("cgroup_skb/ingress")
int drops_pkt_in(struct __sk_buff *ctx)
{
	return count_socket_packet(ctx, true);
}

SEC("cgroup_skb/egress")
int drops_pkt_out(struct __sk_buff *ctx)
{
	return count_socket_packet(ctx, true);
}

SEC("cgroup_skb/ingress")
int drops_pkt_in_port(struct __sk_buff *ctx)
{
	return count_socket_packet(ctx, false);
}

SEC("cgroup_skb/egress")
int drops_pkt_out_port(struct __sk_buff *ctx)
{
	return count_socket_packet(ctx, false);
}
