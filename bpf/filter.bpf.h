/* SPDX-License-Identifier: MIT */
/*
 * The in-kernel filter and sampling every probe shares.
 *
 * Filter: --filter port=, pid=, comm=, cgroup=, netns= (and service= and
 * namespace=, which user space turns into those) become selectors, written
 * before load into the const volatile array below. It is evaluated once per
 * socket, at its first read or write, in the context of the process doing it
 * (a socket accepted in softirq context has no process yet).
 *
 * Sampling: 1 in sample_rate requests is measured, decided when the request
 * starts, so that a request and its response stay together. The rate lives in
 * a map, not a constant: --sample-rate auto changes it while the probe runs.
 */
#ifndef MESHPROBE_FILTER_BPF_H
#define MESHPROBE_FILTER_BPF_H

#include "filter.h"

const volatile struct mp_selector selectors[MP_MAX_SELECTORS] = {};
const volatile __u32 selector_count = 0; /* 0: no filter */
const volatile __u32 clause_mask = 0;	 /* a bit per clause; all must hold */
const volatile bool filter_by_comm = false;

/*
 * The cgroups of cgroup=/namespace= filters, by fd (user space writes them):
 * bpf_current_task_under_cgroup() then holds whatever cgroup namespace the
 * probe runs in, where ids and depths seen from inside would not.
 */
struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, MP_MAX_SELECTORS);
	__type(key, __u32);
	__type(value, __u32);
} filter_cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} sample_rate SEC(".maps");

/*
 * The selector walk shared by filter_pass() and filter_pass_packet().
 * `packet` is a compile-time constant (the function is always inlined), so
 * each caller gets its own loop with the other's tests folded away.
 *  - packet false: the current process's use of socket `sk` (NULL: no socket;
 *    then port and netns conditions cannot be told and do not match);
 *  - packet true: a packet seen in softirq context (no process of its own):
 *    only port and netns (`pkt_netns`) can be told; a selector that also
 *    asks for pid, comm or cgroup does not match. `pkt_netns` 0 with
 *    `netns_unknown`: the caller cannot tell the namespace (a kernel without
 *    the means to read it): netns conditions are not tested.
 */
static __always_inline bool filter_eval(struct sock *sk, __u16 lport, __u16 rport, __u32 pkt_netns,
					const bool packet, const bool netns_unknown)
{
	__u32 held = 0, tgid = 0, netns = 0, i;
	char comm[16] = {};

	if (selector_count == 0)
		return true;
	if (!packet) {
		tgid = bpf_get_current_pid_tgid() >> 32;
		if (filter_by_comm)
			current_process_comm(comm);
	}
	for (i = 0; i < MP_MAX_SELECTORS; i++) {
		const volatile struct mp_selector *f = &selectors[i];

		if (i >= selector_count)
			break;
		if (packet) {
			if (f->tgid || f->comm[0] || f->cgroup_id)
				continue;
			if (f->port && f->port != lport && f->port != rport)
				continue;
			if (!netns_unknown && f->netns && f->netns != pkt_netns)
				continue;
			held |= 1u << (f->clause & 31);
			continue;
		}
		if (f->port && (!sk || (f->port != lport && f->port != rport)))
			continue;
		if (f->tgid && f->tgid != tgid)
			continue;
		if (f->netns && !sk)
			continue;
		if (f->netns) {
			if (!netns)
				netns = sock_netns(sk);
			if (f->netns != netns)
				continue;
		}
		if (f->comm[0]) {
			if (*(__u64 *)&comm[0] != *(const volatile __u64 *)&f->comm[0] ||
			    *(__u64 *)&comm[8] != *(const volatile __u64 *)&f->comm[8])
				continue;
		}
		if (f->cgroup_id &&
		    bpf_current_task_under_cgroup(&filter_cgroups, f->cgroup_slot) != 1)
			continue;
		held |= 1u << (f->clause & 31);
	}
	return held == clause_mask;
}

/*
 * Does the current process's use of socket `sk` (local/remote ports given)
 * pass the filter? Without a socket (sk NULL: a libssl call), port and netns
 * conditions cannot be told: a selector with one does not match.
 */
static __always_inline bool filter_pass(struct sock *sk, __u16 lport, __u16 rport)
{
	return filter_eval(sk, lport, rport, 0, false, false);
}

/*
 * Does a packet (local/remote ports, network namespace inode) pass the
 * filter? For programs without a process context (kfree_skb in softirq):
 * port= and netns= are told from the packet; a selector that also has pid=,
 * comm= or cgroup= conditions cannot be, and does not match.
 */
static __always_inline bool filter_pass_packet(__u16 lport, __u16 rport, __u32 netns)
{
	return filter_eval(NULL, lport, rport, netns, true, false);
}

/* The same, for a packet whose network namespace cannot be told: by ports alone. */
static __always_inline bool filter_pass_packet_ports(__u16 lport, __u16 rport)
{
	return filter_eval(NULL, lport, rport, 0, true, true);
}

/* Is the request starting now measured? */
static __always_inline bool sample_request(void)
{
	__u32 zero = 0, *rate = bpf_map_lookup_elem(&sample_rate, &zero);
	__u32 n = rate ? *rate : 1;

	return n <= 1 || bpf_get_prandom_u32() % n == 0;
}

#endif
