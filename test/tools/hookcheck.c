/*
 * hookcheck: loads build/bpf/latency.bpf.o with one choice of read/write
 * hooks (raw_tp | fexit | kprobe), runs a request/response workload on
 * loopback, and counts the latency records the programs emit. Built
 * statically so that test/kernels.test.ts can run it inside another kernel
 * under qemu, where Node is not available.
 *
 *   hookcheck OBJECT MODE [REQUESTS] [SLEEP_US]
 *
 * Prints one JSON line; exits 0 when every request was seen once in the
 * client view and once in the server view.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <linux/types.h>
#include "../../bpf/records.h"

static unsigned long long n_client, n_server, n_open, n_close, n_lost;
static double sum_client_ns, sum_server_ns;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static size_t rec_size(unsigned kind)
{
	switch (kind) {
	case MP_REC_LATENCY: return sizeof(struct mp_latency_rec);
	case MP_REC_CONN_OPEN: return sizeof(struct mp_conn_open_rec);
	case MP_REC_CONN_CLOSE: return sizeof(struct mp_conn_close_rec);
	}
	return 0;
}

/* a sample holds one record or a batch of them back to back */
static void on_sample(void *ctx, int cpu, void *data, __u32 size)
{
	const unsigned char *p = data;
	size_t off = 0;

	while (size - off >= sizeof(struct mp_rec_hdr)) {
		struct mp_rec_hdr h;
		memcpy(&h, p + off, sizeof h);
		size_t n = rec_size(h.kind);
		if (!n || h.version != MP_REC_VERSION || size - off < n)
			break;
		if (h.kind == MP_REC_LATENCY) {
			struct mp_latency_rec r;
			memcpy(&r, p + off, sizeof r);
			if (r.hdr.role == MP_ROLE_CLIENT) {
				n_client++;
				sum_client_ns += (double)r.latency_ns;
			} else if (r.hdr.role == MP_ROLE_SERVER) {
				n_server++;
				sum_server_ns += (double)r.latency_ns;
			}
		} else if (h.kind == MP_REC_CONN_OPEN) {
			n_open++;
		} else {
			n_close++;
		}
		off += n;
	}
}

static void on_lost(void *ctx, int cpu, __u64 cnt) { n_lost += cnt; }

/* opens the object with only the chosen programs to load */
static struct bpf_object *open_with(const char *path, const char **progs)
{
	struct bpf_object *obj = bpf_object__open_file(path, NULL);
	if (libbpf_get_error(obj)) return NULL;
	struct bpf_program *prog;
	bpf_object__for_each_program(prog, obj) {
		const char *name = bpf_program__name(prog);
		bool on = !strcmp(name, "latency_flush");
		for (int i = 0; progs[i]; i++)
			on = on || !strcmp(name, progs[i]);
		bpf_program__set_autoload(prog, on);
	}
	return obj;
}

struct server_arg { int lfd; int requests; int sleep_us; };

static void *serve(void *p)
{
	struct server_arg *a = p;
	int fd = accept(a->lfd, NULL, NULL);
	char req[16], resp[64] = {0};
	for (int i = 0; i < a->requests && fd >= 0; i++) {
		size_t got = 0;
		while (got < sizeof req) {
			ssize_t r = read(fd, req + got, sizeof req - got);
			if (r <= 0) goto out;
			got += r;
		}
		usleep(a->sleep_us);
		if (write(fd, resp, sizeof resp) != sizeof resp) break;
	}
out:
	if (fd >= 0) close(fd);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: hookcheck OBJECT raw_tp|fexit|kprobe [REQUESTS] [SLEEP_US]\n");
		return 2;
	}
	const char *path = argv[1], *mode = argv[2];
	int requests = argc > 3 ? atoi(argv[3]) : 50;
	int sleep_us = argc > 4 ? atoi(argv[4]) : 2000;
	const char *progs[8] = { "latency_state" };
	if (!strcmp(mode, "raw_tp")) {
		progs[1] = "latency_send"; progs[2] = "latency_recv";
	} else if (!strcmp(mode, "fexit")) {
		progs[1] = "latency_send_fx"; progs[2] = "latency_recv_fx";
	} else if (!strcmp(mode, "kprobe")) {
		progs[1] = "latency_send_kp"; progs[2] = "latency_send_kr";
		progs[3] = "latency_recv_kp"; progs[4] = "latency_recv_kr";
	} else {
		fprintf(stderr, "hookcheck: unknown mode %s\n", mode);
		return 2;
	}
	struct utsname u;
	uname(&u);

	struct bpf_object *obj = open_with(path, progs);
	if (!obj) {
		printf("{\"mode\":\"%s\",\"kernel\":\"%s\",\"ok\":false,\"stage\":\"open\"}\n", mode, u.release);
		return 1;
	}
	int err = bpf_object__load(obj);
	if (err) {
		printf("{\"mode\":\"%s\",\"kernel\":\"%s\",\"ok\":false,\"stage\":\"load\",\"errno\":%d}\n", mode, u.release, -err);
		return 1;
	}
	for (int i = 0; progs[i]; i++) {
		struct bpf_link *l = bpf_program__attach(bpf_object__find_program_by_name(obj, progs[i]));
		if (libbpf_get_error(l)) {
			printf("{\"mode\":\"%s\",\"kernel\":\"%s\",\"ok\":false,\"stage\":\"attach %s\",\"errno\":%ld}\n",
			       mode, u.release, progs[i], -libbpf_get_error(l));
			return 1;
		}
	}
	struct perf_buffer *pb = perf_buffer__new(bpf_map__fd(bpf_object__find_map_by_name(obj, "events")), 64,
						  on_sample, on_lost, NULL, NULL);
	if (libbpf_get_error(pb)) {
		printf("{\"mode\":\"%s\",\"kernel\":\"%s\",\"ok\":false,\"stage\":\"perf\"}\n", mode, u.release);
		return 1;
	}

	/* workload: one keep-alive connection on loopback, the server sleeps sleep_us */
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof sa;
	if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) || listen(lfd, 8) || getsockname(lfd, (struct sockaddr *)&sa, &sl)) {
		perror("hookcheck: listen");
		return 1;
	}
	struct server_arg arg = { lfd, requests, sleep_us };
	pthread_t th;
	pthread_create(&th, NULL, serve, &arg);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
		perror("hookcheck: connect");
		return 1;
	}
	char req[16] = {1}, resp[64];
	double own_ns = 0;
	for (int i = 0; i < requests; i++) {
		uint64_t t0 = now_ns();
		if (write(fd, req, sizeof req) != sizeof req) break;
		size_t got = 0;
		while (got < sizeof resp) {
			ssize_t r = read(fd, resp + got, sizeof resp - got);
			if (r <= 0) break;
			if (got == 0)
				own_ns += (double)(now_ns() - t0);
			got += r;
		}
	}
	close(fd);
	pthread_join(th, NULL);
	close(lfd);

	/* send what the per-CPU batches hold, then read the rings */
	int flush_fd = bpf_program__fd(bpf_object__find_program_by_name(obj, "latency_flush"));
	int ncpu = libbpf_num_possible_cpus();
	for (int c = 0; c < ncpu; c++) {
		__u64 args[1] = {0};
		LIBBPF_OPTS(bpf_test_run_opts, o, .ctx_in = args, .ctx_size_in = sizeof args,
			    .flags = BPF_F_TEST_RUN_ON_CPU, .cpu = (__u32)c);
		bpf_prog_test_run_opts(flush_fd, &o);
	}
	usleep(100000);
	perf_buffer__consume(pb);

	bool ok = n_client == (unsigned long long)requests && n_server == (unsigned long long)requests && n_lost == 0 &&
		  n_open == 2 && n_close == 2;
	printf("{\"mode\":\"%s\",\"kernel\":\"%s\",\"ok\":%s,\"requests\":%d,\"client\":%llu,\"server\":%llu,"
	       "\"open\":%llu,\"close\":%llu,\"lost\":%llu,\"client_mean_us\":%.1f,\"own_mean_us\":%.1f,\"server_mean_us\":%.1f}\n",
	       mode, u.release, ok ? "true" : "false", requests, n_client, n_server, n_open, n_close, n_lost,
	       n_client ? sum_client_ns / n_client / 1e3 : 0, own_ns / requests / 1e3,
	       n_server ? sum_server_ns / n_server / 1e3 : 0);
	perf_buffer__free(pb);
	bpf_object__close(obj);
	return ok ? 0 : 1;
}
