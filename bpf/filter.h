/* SPDX-License-Identifier: MIT */
/*
 * The layout of the in-kernel filter, shared by bpf/filter.bpf.h and
 * src/filter/kernel.ts (which encodes it; test/filter.test.ts checks the
 * offsets against the C compiler).
 */
#ifndef MESHPROBE_FILTER_H
#define MESHPROBE_FILTER_H

/*
 * A socket is measured when every clause holds; clause c
 * holds when some selector of clause c matches all its non-zero fields.
 */
#define MP_MAX_SELECTORS 64

/* 40 bytes */
struct mp_selector {
	__u64 cgroup_id;  /* 0: any; else the process is in this cgroup v2 or below it (the id, for
			     the record) */
	__u32 tgid;	  /* 0: any; process id */
	__u32 netns;	  /* 0: any; the socket's network namespace inode */
	__u16 port;	  /* 0: any; the socket's local or remote port */
	__u8 cgroup_slot; /* with cgroup_id: the index of that cgroup in the filter_cgroups map */
	__u8 clause;	  /* 0..31 */
	__u32 _pad;
	char comm[16]; /* "": any; else the process's comm, exactly */
};

#endif
