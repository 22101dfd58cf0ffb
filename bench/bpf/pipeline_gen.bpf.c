// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Benchmark only: makes synthetic latency records through the same batching
 * and perf output code as the probes (bpf/common.bpf.h), so that
 * bench/pipeline-rate.ts can measure how many records a second the whole
 * pipeline (perf rings -> native drain -> Wasm decode) takes without loss.
 * User space runs it with BPF_PROG_TEST_RUN on a chosen CPU.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "common.bpf.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

const volatile __u32 records_per_run = 256;
const volatile __u32 connections = 2000;

struct gen_ctx {
	void *ctx;
	struct mp_batch *b;
	__u64 now;
};

static long gen_one(__u32 i, struct gen_ctx *g)
{
	struct mp_batch *b = g->b;
	struct mp_latency_rec *r;
	__u32 rnd = bpf_get_prandom_u32();
	__u32 conn = rnd % connections;

	if (!batch_begin(b))
		return 1; /* cannot happen: nothing else appends on this CPU meanwhile */
	r = batch_reserve(g->ctx, b, sizeof(*r));
	r->hdr.kind = MP_REC_LATENCY;
	r->hdr.version = MP_REC_VERSION;
	r->hdr.role = (conn & 1) ? MP_ROLE_SERVER : MP_ROLE_CLIENT;
	r->hdr.family = MP_AF_INET;
	r->hdr.tgid = 1000 + conn % 20;
	r->hdr.conn_id = conn + 1;
	r->end_ns = g->now;
	r->latency_ns = 20000 + (rnd >> 12); /* 20 us .. ~1 ms */
	r->srtt_us = 50;
	r->min_rtt_us = 20;
	r->lport = (conn & 1) ? 8000 + conn % 20 : 40000 + conn;
	r->rport = (conn & 1) ? 40000 + conn : 8000 + conn % 20;
	r->netns = 4026531840;
	r->raddr[0] = 127;
	r->raddr[3] = 1;
	batch_end(b);
	return 0;
}

SEC("raw_tp")
int pipeline_gen(struct bpf_raw_tracepoint_args *ctx)
{
	struct gen_ctx g = {.ctx = ctx, .b = batch_get(), .now = bpf_ktime_get_ns()};

	if (!g.b)
		return 0;
	bpf_loop(records_per_run, gen_one, &g, 0);
	return records_per_run;
}

MP_FLUSH_PROGRAM(pipeline_flush)
