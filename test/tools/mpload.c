/*
 * mpload — ground-truth load generator and sleeping server for meshprobe's
 * accuracy tests.
 *
 * Build: cc -O2 -pthread -o test/tools/bin/mpload test/tools/mpload.c
 *
 * Wire protocol (all fields u32, network byte order):
 *   request  (16 bytes): magic, sleep_us, resp_len, seq
 *   response (resp_len bytes, >= 16): the 16 request bytes echoed, then filler
 * or, with --http on both sides, HTTP/1.1 keep-alive (so HTTP proxies can sit
 * between them):
 *   request  "GET /mp/<sleep_us>/<resp_len>/<seq> HTTP/1.1" + Host, no body
 *   response "HTTP/1.1 200 OK" + Content-Length: resp_len + X-Mp-Seq: <seq>,
 *            a body of resp_len bytes
 *
 *   mpload server --listen ADDR --port P [--ready-file F] [--duration S]
 *                 [--spin-us 150] [--max-spinners 1]
 *   mpload client --connect ADDR --port P --requests N --concurrency C
 *                 [--sleeps "0,1000"] [--weights "50,50"] [--new-conn]
 *                 [--resp-len 64] [--rate R] [--seed S] [--timeout-ms MS]
 *                 [--out FILE] [--samples FILE] [--http]
 *
 * The server prints a JSON summary on SIGTERM/SIGINT or after --duration;
 * the client prints a JSON report when done (exit 1 if any request failed).
 * Percentiles are exact nearest-rank over all kept samples.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define MP_MAGIC 0x4D504C44u /* "MPLD" */
#define REQ_LEN 16u
#define MAX_RESP_LEN (64u * 1024u * 1024u)
#define HTTP_HDR_MAX 8192

static int http_mode; /* --http: HTTP/1.1 framing instead of the binary one */
static uint64_t now_ns(void);

/* Reads into buf (cap bytes, *have already there) until "\r\n\r\n"; returns the
 * header length (through the blank line), 0 on EOF/error/overflow. *t_first is
 * set at the first byte read when it was 0. */
static size_t http_read_head(int fd, char *buf, size_t cap, size_t *have, uint64_t *t_first) {
  for (;;) {
    if (*have >= 4) {
      char *e = memmem(buf, *have, "\r\n\r\n", 4);
      if (e) return (size_t)(e - buf) + 4;
    }
    if (*have >= cap) return 0;
    ssize_t r = read(fd, buf + *have, cap - *have);
    if (r > 0) {
      if (t_first && !*t_first) *t_first = now_ns();
      *have += (size_t)r;
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    return 0;
  }
}

/* The value of header `name` (case-insensitive, "Name:" at a line start) as a number, or -1. */
static long long http_header_num(const char *head, size_t len, const char *name) {
  size_t nl = strlen(name);
  for (const char *p = head; p && p < head + len;) {
    const char *eol = memmem(p, (size_t)(head + len - p), "\r\n", 2);
    if (!eol) break;
    if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') return strtoll(p + nl + 1, NULL, 10);
    p = eol + 2;
  }
  return -1;
}
#define SERVER_MAX_SAMPLES (2u * 1024u * 1024u)
#define MAX_SLEEPS 64
#define THREAD_STACK (256u * 1024u)
#define NS_ERR UINT64_MAX

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_until_ns(uint64_t t) {
  struct timespec ts = {.tv_sec = (time_t)(t / 1000000000ull), .tv_nsec = (long)(t % 1000000000ull)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
  }
}

static void die_usage(const char *msg) {
  fprintf(stderr, "mpload: %s\n", msg);
  fprintf(stderr,
          "usage:\n"
          "  mpload server --listen ADDR --port P [--ready-file F] [--duration S]\n"
          "                [--spin-us US (150; 0 = pure clock_nanosleep)] [--max-spinners N (1)] [--http]\n"
          "  mpload client --connect ADDR --port P --requests N --concurrency C\n"
          "                [--sleeps LIST] [--weights LIST] [--new-conn] [--resp-len B]\n"
          "                [--rate R] [--seed S] [--timeout-ms MS] [--out F] [--samples F] [--http]\n");
  exit(2);
}

static uint64_t parse_u64(const char *s, const char *what) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end || s[0] == '-') {
    char buf[256];
    snprintf(buf, sizeof buf, "bad value for %s: '%s'", what, s);
    die_usage(buf);
  }
  return (uint64_t)v;
}

static double parse_double(const char *s, const char *what) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || v < 0) {
    char buf[256];
    snprintf(buf, sizeof buf, "bad value for %s: '%s'", what, s);
    die_usage(buf);
  }
  return v;
}

static int parse_list(const char *s, uint64_t *out, int max, const char *what) {
  int n = 0;
  const char *p = s;
  while (*p) {
    if (n >= max) die_usage("list too long");
    char *end;
    errno = 0;
    unsigned long long v = strtoull(p, &end, 10);
    if (errno || end == p || *p == '-') {
      char buf[256];
      snprintf(buf, sizeof buf, "bad list for %s: '%s'", what, s);
      die_usage(buf);
    }
    out[n++] = (uint64_t)v;
    p = end;
    while (*p == ' ') p++;
    if (*p == ',')
      p++;
    else if (*p) {
      char buf[256];
      snprintf(buf, sizeof buf, "bad list for %s: '%s'", what, s);
      die_usage(buf);
    }
  }
  return n;
}

static void raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

static int resolve(const char *addr, uint16_t port, int passive, struct sockaddr_storage *ss, socklen_t *len) {
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  char pbuf[16];
  snprintf(pbuf, sizeof pbuf, "%u", (unsigned)port);
  int rc = getaddrinfo(addr, pbuf, &hints, &res);
  if (rc != 0 || !res) {
    fprintf(stderr, "mpload: cannot resolve '%s': %s\n", addr, gai_strerror(rc));
    return -1;
  }
  memcpy(ss, res->ai_addr, res->ai_addrlen);
  *len = res->ai_addrlen;
  freeaddrinfo(res);
  return 0;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* nearest rank: the smallest value with at least p% of samples <= it */
static uint64_t pct(const uint64_t *sorted, size_t n, double p) {
  if (n == 0) return 0;
  double r = (p / 100.0) * (double)n;
  size_t rank = (size_t)r;
  if ((double)rank < r) rank++;
  if (rank < 1) rank = 1;
  if (rank > n) rank = n;
  return sorted[rank - 1];
}

static double us(uint64_t ns) { return (double)ns / 1000.0; }

static int write_all(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len) {
    ssize_t w = write(fd, p, len);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    len -= (size_t)w;
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* server                                                                   */
/* ------------------------------------------------------------------------ */

struct srv_sample {
  uint64_t ns;       /* processing time, 0 = slot not yet written */
  uint32_t sleep_us; /* requested sleep */
};

static struct srv_sample *srv_samples;
static atomic_uint_fast64_t srv_nsamples;
static atomic_uint_fast64_t srv_requests;
static atomic_uint_fast64_t srv_connections;
static atomic_int srv_active;
static atomic_int srv_active_max;
static atomic_uint_fast64_t srv_bad;

/*
 * Sleep until deadline t. clock_nanosleep alone overshoots by the wakeup
 * latency of an idle (virtual) CPU, ~50-150 us on small VMs even with a 1 ns
 * timer slack. So, by default, sleep until t - spin_ns and busy-wait the rest
 * on the clock. At most srv_max_spinners threads spin at once (others sleep to
 * t directly) so that many concurrent sleeps cannot eat the CPUs.
 */
static uint64_t srv_spin_ns = 150000;
static int srv_max_spinners = 1;
static atomic_int srv_spinners;

static void srv_sleep_until(uint64_t t) {
  if (srv_spin_ns == 0 || srv_max_spinners <= 0) {
    sleep_until_ns(t);
    return;
  }
  uint64_t now = now_ns();
  if (t > now + srv_spin_ns) sleep_until_ns(t - srv_spin_ns);
  if (atomic_fetch_add(&srv_spinners, 1) < srv_max_spinners) {
    while (now_ns() < t) {
    }
    atomic_fetch_sub(&srv_spinners, 1);
  } else {
    atomic_fetch_sub(&srv_spinners, 1);
    sleep_until_ns(t);
  }
}

static void *srv_conn(void *arg) {
  int fd = (int)(intptr_t)arg;
  int cur = atomic_fetch_add(&srv_active, 1) + 1;
  int prev = atomic_load(&srv_active_max);
  while (cur > prev && !atomic_compare_exchange_weak(&srv_active_max, &prev, cur)) {
  }

  char *resp = NULL;
  size_t resp_cap = 0;
  uint32_t req[4];
  char *hbuf = http_mode ? malloc(HTTP_HDR_MAX + 1) : NULL; /* + 1: room to end the head with a NUL */
  size_t hhave = 0;
  for (;;) {
    if (http_mode) {
      size_t hl = http_read_head(fd, hbuf, HTTP_HDR_MAX, &hhave, NULL);
      if (!hl) goto done;
      uint64_t t_read = now_ns();
      unsigned sleep_us = 0, resp_len = 0, seq = 0;
      char after = hbuf[hl]; /* sscanf needs a string: end it at the head, then put the next byte back */
      hbuf[hl] = 0;
      int nf = sscanf(hbuf, "GET /mp/%u/%u/%u ", &sleep_us, &resp_len, &seq);
      hbuf[hl] = after;
      if (nf != 3 || resp_len > MAX_RESP_LEN) {
        atomic_fetch_add(&srv_bad, 1);
        goto done;
      }
      memmove(hbuf, hbuf + hl, hhave - hl); /* a pipelined next request stays */
      hhave -= hl;
      char head[160];
      int n =
          snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %u\r\nX-Mp-Seq: %u\r\n\r\n", resp_len, seq);
      if ((size_t)n + resp_len > resp_cap) {
        char *nb = realloc(resp, (size_t)n + resp_len);
        if (!nb) goto done;
        resp = nb;
        resp_cap = (size_t)n + resp_len;
      }
      memcpy(resp, head, (size_t)n);
      for (size_t i = 0; i < resp_len; i++) resp[n + i] = (char)('a' + i % 26);
      if (sleep_us) srv_sleep_until(t_read + (uint64_t)sleep_us * 1000ull);
      uint64_t t_w = now_ns();
      if (write_all(fd, resp, (size_t)n + resp_len) < 0) goto done;
      uint64_t idx = atomic_fetch_add(&srv_nsamples, 1);
      if (idx < SERVER_MAX_SAMPLES) {
        uint64_t d = t_w - t_read;
        srv_samples[idx].sleep_us = sleep_us;
        __atomic_store_n(&srv_samples[idx].ns, d ? d : 1, __ATOMIC_RELEASE);
      }
      atomic_fetch_add(&srv_requests, 1);
      continue;
    }
    size_t got = 0;
    while (got < REQ_LEN) {
      ssize_t r = read(fd, (char *)req + got, REQ_LEN - got);
      if (r > 0) {
        got += (size_t)r;
        continue;
      }
      if (r < 0 && errno == EINTR) continue;
      goto done; /* EOF or error */
    }
    uint64_t t_read = now_ns();
    uint32_t magic = ntohl(req[0]), sleep_us = ntohl(req[1]), resp_len = ntohl(req[2]);
    if (magic != MP_MAGIC || resp_len > MAX_RESP_LEN) {
      atomic_fetch_add(&srv_bad, 1);
      goto done;
    }
    if (resp_len < REQ_LEN) resp_len = REQ_LEN;
    if (resp_len > resp_cap) {
      char *n = realloc(resp, resp_len);
      if (!n) goto done;
      resp = n;
      for (size_t i = resp_cap; i < resp_len; i++) resp[i] = (char)('a' + i % 26);
      resp_cap = resp_len;
    }
    memcpy(resp, req, REQ_LEN);
    if (sleep_us) srv_sleep_until(t_read + (uint64_t)sleep_us * 1000ull);
    uint64_t t_w = now_ns();
    ssize_t w = write(fd, resp, resp_len);
    if (w < 0 && errno == EINTR) w = 0;
    if (w < 0) goto done;
    if ((size_t)w < resp_len && write_all(fd, resp + w, resp_len - (size_t)w) < 0) goto done;
    uint64_t idx = atomic_fetch_add(&srv_nsamples, 1);
    if (idx < SERVER_MAX_SAMPLES) {
      uint64_t d = t_w - t_read;
      srv_samples[idx].sleep_us = sleep_us;
      __atomic_store_n(&srv_samples[idx].ns, d ? d : 1, __ATOMIC_RELEASE);
    }
    atomic_fetch_add(&srv_requests, 1);
  }
done:
  free(resp);
  free(hbuf);
  close(fd);
  atomic_fetch_sub(&srv_active, 1);
  return NULL;
}

struct accept_args {
  int lfd;
};

static void *srv_accept(void *arg) {
  int lfd = ((struct accept_args *)arg)->lfd;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, THREAD_STACK);
  for (;;) {
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        usleep(1000);
        continue;
      }
      perror("mpload: accept");
      usleep(1000);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    atomic_fetch_add(&srv_connections, 1);
    pthread_t t;
    if (pthread_create(&t, &attr, srv_conn, (void *)(intptr_t)fd) != 0) {
      perror("mpload: pthread_create");
      close(fd);
    }
  }
  return NULL;
}

static int cmp_srv(const void *a, const void *b) {
  const struct srv_sample *x = a, *y = b;
  if (x->sleep_us != y->sleep_us) return x->sleep_us < y->sleep_us ? -1 : 1;
  return x->ns < y->ns ? -1 : x->ns > y->ns;
}

static void srv_summary(FILE *f) {
  uint64_t n = atomic_load(&srv_nsamples);
  if (n > SERVER_MAX_SAMPLES) n = SERVER_MAX_SAMPLES;
  struct srv_sample *s = malloc(sizeof *s * (n ? n : 1));
  uint64_t *all = malloc(sizeof *all * (n ? n : 1));
  size_t k = 0;
  for (uint64_t i = 0; i < n; i++) {
    uint64_t ns = __atomic_load_n(&srv_samples[i].ns, __ATOMIC_ACQUIRE);
    if (!ns) continue; /* claimed, not yet written */
    s[k].ns = ns;
    s[k].sleep_us = srv_samples[i].sleep_us;
    all[k] = ns;
    k++;
  }
  qsort(all, k, sizeof *all, cmp_u64);
  qsort(s, k, sizeof *s, cmp_srv);
  double sum = 0;
  for (size_t i = 0; i < k; i++) sum += (double)all[i];
  fprintf(f,
          "{\"requests\":%" PRIu64 ",\"connections\":%" PRIu64
          ",\"max_active_connections\":%d,"
          "\"bad_requests\":%" PRIu64 ",\"samples\":%zu,",
          (uint64_t)atomic_load(&srv_requests), (uint64_t)atomic_load(&srv_connections), atomic_load(&srv_active_max),
          (uint64_t)atomic_load(&srv_bad), k);
  fprintf(f,
          "\"processing_us\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"p999\":%.3f,"
          "\"min\":%.3f,\"max\":%.3f,\"mean\":%.3f},",
          us(pct(all, k, 50)), us(pct(all, k, 90)), us(pct(all, k, 99)), us(pct(all, k, 99.9)), us(k ? all[0] : 0),
          us(k ? all[k - 1] : 0), k ? sum / (double)k / 1000.0 : 0.0);
  fprintf(f, "\"by_sleep\":{");
  uint64_t *tmp = malloc(sizeof *tmp * (k ? k : 1));
  int first = 1;
  for (size_t i = 0; i < k;) {
    size_t j = i;
    while (j < k && s[j].sleep_us == s[i].sleep_us) j++;
    size_t m = j - i;
    for (size_t q = 0; q < m; q++) tmp[q] = s[i + q].ns; /* already sorted by ns */
    fprintf(f, "%s\"%u\":{\"count\":%zu,\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f}", first ? "" : ",",
            s[i].sleep_us, m, us(pct(tmp, m, 50)), us(pct(tmp, m, 90)), us(pct(tmp, m, 99)), us(tmp[m - 1]));
    first = 0;
    i = j;
  }
  fprintf(f, "},\"config\":{\"spin_us\":%" PRIu64 ",\"max_spinners\":%d}}\n", (uint64_t)(srv_spin_ns / 1000ull),
          srv_max_spinners);
  fflush(f);
  free(tmp);
  free(s);
  free(all);
}

static int run_server(int argc, char **argv) {
  const char *listen_addr = NULL, *ready_file = NULL;
  long port = -1;
  double duration = 0;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
#define NEXT() (i + 1 < argc ? argv[++i] : (die_usage("missing value"), ""))
    if (!strcmp(a, "--listen"))
      listen_addr = NEXT();
    else if (!strcmp(a, "--port"))
      port = (long)parse_u64(NEXT(), "--port");
    else if (!strcmp(a, "--ready-file"))
      ready_file = NEXT();
    else if (!strcmp(a, "--duration"))
      duration = parse_double(NEXT(), "--duration");
    else if (!strcmp(a, "--spin-us"))
      srv_spin_ns = parse_u64(NEXT(), "--spin-us") * 1000ull;
    else if (!strcmp(a, "--max-spinners"))
      srv_max_spinners = (int)parse_u64(NEXT(), "--max-spinners");
    else if (!strcmp(a, "--http"))
      http_mode = 1;
    else {
      char buf[256];
      snprintf(buf, sizeof buf, "unknown server option '%s'", a);
      die_usage(buf);
    }
  }
  if (!listen_addr) die_usage("server needs --listen");
  if (port < 0 || port > 65535) die_usage("server needs --port 0..65535");

  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  raise_nofile();
  signal(SIGPIPE, SIG_IGN);

  /* block the stop signals everywhere; the main thread waits for them */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, NULL);

  srv_samples = calloc(SERVER_MAX_SAMPLES, sizeof *srv_samples);
  if (!srv_samples) {
    perror("mpload: calloc");
    return 1;
  }

  struct sockaddr_storage ss;
  socklen_t sl;
  if (resolve(listen_addr, (uint16_t)port, 1, &ss, &sl) < 0) return 1;
  int lfd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (lfd < 0) {
    perror("mpload: socket");
    return 1;
  }
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(lfd, (struct sockaddr *)&ss, sl) < 0) {
    fprintf(stderr, "mpload: bind %s port %ld: %s\n", listen_addr, port, strerror(errno));
    return 1;
  }
  if (listen(lfd, 65535) < 0) {
    perror("mpload: listen");
    return 1;
  }
  struct sockaddr_storage bound;
  socklen_t bl = sizeof bound;
  getsockname(lfd, (struct sockaddr *)&bound, &bl);
  unsigned real_port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                                   : ntohs(((struct sockaddr_in *)&bound)->sin_port);

  struct accept_args aa = {.lfd = lfd};
  pthread_t at;
  if (pthread_create(&at, NULL, srv_accept, &aa) != 0) {
    perror("mpload: pthread_create");
    return 1;
  }

  fprintf(stderr, "mpload server listening on %s port %u\n", listen_addr, real_port);
  if (ready_file) {
    /* write-then-rename so a reader never sees a partial file */
    size_t L = strlen(ready_file) + 32;
    char *tmp = malloc(L);
    snprintf(tmp, L, "%s.tmp.%d", ready_file, (int)getpid());
    FILE *rf = fopen(tmp, "w");
    if (!rf || fprintf(rf, "%u\n", real_port) < 0 || fclose(rf) != 0 || rename(tmp, ready_file) != 0) {
      fprintf(stderr, "mpload: cannot write ready file %s: %s\n", ready_file, strerror(errno));
      return 1;
    }
    free(tmp);
  }

  for (;;) {
    int sig;
    if (duration > 0) {
      struct timespec to = {.tv_sec = (time_t)duration, .tv_nsec = (long)((duration - (double)(time_t)duration) * 1e9)};
      sig = sigtimedwait(&set, NULL, &to);
      if (sig < 0 && errno == EINTR) continue;
      break; /* a signal or the timeout */
    } else {
      if (sigwait(&set, &sig) == 0) break;
    }
  }
  srv_summary(stdout);
  _exit(0);
}

/* ------------------------------------------------------------------------ */
/* client                                                                   */
/* ------------------------------------------------------------------------ */

struct client_cfg {
  struct sockaddr_storage ss;
  socklen_t sl;
  uint64_t requests;
  int concurrency;
  int new_conn;
  uint32_t resp_len;
  double rate;
  int timeout_ms;
  uint32_t sleeps[MAX_SLEEPS];
  int nsleeps;
};

static struct client_cfg C;
static uint8_t *plan;     /* sleep bucket per request index */
static uint64_t *lat_ns;  /* per request index, NS_ERR = failed */
static uint64_t *conn_ns; /* per request index (new-conn), NS_ERR = none */
static atomic_uint_fast64_t next_req;
static atomic_uint_fast64_t cl_errors;
static atomic_uint_fast64_t cl_connections;
static atomic_uint_fast64_t err_connect, err_io, err_eof, err_mismatch, err_timeout;
static pthread_barrier_t bar;
static uint64_t start_ns;

static uint64_t splitmix64_at(uint64_t seed, uint64_t i) {
  /* output number i (0-based) of splitmix64 seeded with seed */
  uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static int cl_connect(void) {
  int fd = socket(C.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (C.timeout_ms > 0) {
    struct timeval tv = {.tv_sec = C.timeout_ms / 1000, .tv_usec = (C.timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }
  while (connect(fd, (struct sockaddr *)&C.ss, C.sl) < 0) {
    if (errno == EINTR) continue;
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  atomic_fetch_add(&cl_connections, 1);
  return fd;
}

static void count_err(atomic_uint_fast64_t *kind) {
  atomic_fetch_add(&cl_errors, 1);
  atomic_fetch_add(kind, 1);
}

static void *cl_thread(void *arg) {
  (void)arg;
  int fd = -1;
  char *buf = malloc(C.resp_len);
  char *hbuf = malloc(HTTP_HDR_MAX);
  if (!C.new_conn) fd = cl_connect(); /* not timed; failures are retried per request */
  pthread_barrier_wait(&bar);
  pthread_barrier_wait(&bar);
  for (;;) {
    uint64_t i = atomic_fetch_add(&next_req, 1);
    if (i >= C.requests) break;
    if (C.rate > 0) sleep_until_ns(start_ns + (uint64_t)((double)i * 1e9 / C.rate));
    uint32_t sleep_us = C.sleeps[plan[i]];
    if (fd < 0) {
      uint64_t c0 = now_ns();
      fd = cl_connect();
      uint64_t c1 = now_ns();
      if (fd < 0) {
        count_err(&err_connect);
        continue;
      }
      if (C.new_conn) conn_ns[i] = c1 - c0;
    }
    if (http_mode) {
      char rq[128];
      int rn = snprintf(rq, sizeof rq, "GET /mp/%u/%u/%u HTTP/1.1\r\nHost: mpload\r\n\r\n", sleep_us, C.resp_len,
                        (unsigned)i);
      uint64_t t0 = now_ns(), t1 = 0;
      if (write_all(fd, rq, (size_t)rn) < 0) {
        count_err((errno == EAGAIN || errno == EWOULDBLOCK) ? &err_timeout : &err_io);
        close(fd);
        fd = -1;
        continue;
      }
      size_t have = 0;
      size_t hl = http_read_head(fd, hbuf, HTTP_HDR_MAX, &have, &t1);
      long long clen = hl ? http_header_num(hbuf, hl, "Content-Length") : -1;
      long long seq = hl ? http_header_num(hbuf, hl, "X-Mp-Seq") : -1;
      int failed = 0;
      if (!hl) {
        count_err(have ? &err_io : &err_eof);
        failed = 1;
      } else if (strncmp(hbuf, "HTTP/1.1 200", 12) != 0 || clen != (long long)C.resp_len || seq != (long long)i) {
        count_err(&err_mismatch);
        failed = 1;
      } else {
        size_t body = have - hl; /* the rest of the body, read and dropped */
        while (body < C.resp_len) {
          ssize_t r = read(fd, buf, C.resp_len - body);
          if (r > 0) {
            body += (size_t)r;
            continue;
          }
          if (r < 0 && errno == EINTR) continue;
          count_err(r == 0 ? &err_eof : &err_io);
          failed = 1;
          break;
        }
      }
      if (failed) {
        close(fd);
        fd = -1;
        continue;
      }
      lat_ns[i] = t1 - t0;
      if (C.new_conn) {
        close(fd);
        fd = -1;
      }
      continue;
    }
    uint32_t req[4] = {htonl(MP_MAGIC), htonl(sleep_us), htonl(C.resp_len), htonl((uint32_t)i)};
    uint64_t t0 = now_ns();
    ssize_t w;
    do w = write(fd, req, REQ_LEN);
    while (w < 0 && errno == EINTR);
    if (w != (ssize_t)REQ_LEN) {
      count_err((w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) ? &err_timeout : &err_io);
      close(fd);
      fd = -1;
      continue;
    }
    size_t got = 0;
    uint64_t t1 = 0;
    int failed = 0;
    while (got < C.resp_len) {
      ssize_t r = read(fd, buf + got, C.resp_len - got);
      if (r > 0) {
        if (!got) t1 = now_ns();
        got += (size_t)r;
        continue;
      }
      if (r < 0 && errno == EINTR) continue;
      if (r == 0)
        count_err(&err_eof);
      else if (errno == EAGAIN || errno == EWOULDBLOCK)
        count_err(&err_timeout);
      else
        count_err(&err_io);
      failed = 1;
      break;
    }
    if (!failed && memcmp(buf, req, REQ_LEN) != 0) {
      count_err(&err_mismatch);
      failed = 1;
    }
    if (failed) {
      close(fd);
      fd = -1;
      continue;
    }
    lat_ns[i] = t1 - t0;
    if (C.new_conn) {
      close(fd);
      fd = -1;
    }
  }
  if (fd >= 0) close(fd);
  free(buf);
  free(hbuf);
  return NULL;
}

static void print_stats(FILE *f, const uint64_t *sorted, size_t n, int full) {
  double sum = 0;
  for (size_t i = 0; i < n; i++) sum += (double)sorted[i];
  if (full)
    fprintf(f,
            "{\"p50\":%.3f,\"p75\":%.3f,\"p90\":%.3f,\"p95\":%.3f,\"p99\":%.3f,\"p999\":%.3f,"
            "\"min\":%.3f,\"max\":%.3f,\"mean\":%.3f}",
            us(pct(sorted, n, 50)), us(pct(sorted, n, 75)), us(pct(sorted, n, 90)), us(pct(sorted, n, 95)),
            us(pct(sorted, n, 99)), us(pct(sorted, n, 99.9)), us(n ? sorted[0] : 0), us(n ? sorted[n - 1] : 0),
            n ? sum / (double)n / 1000.0 : 0.0);
  else
    fprintf(f, "{\"count\":%zu,\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"min\":%.3f,\"max\":%.3f,\"mean\":%.3f}", n,
            us(pct(sorted, n, 50)), us(pct(sorted, n, 90)), us(pct(sorted, n, 99)), us(n ? sorted[0] : 0),
            us(n ? sorted[n - 1] : 0), n ? sum / (double)n / 1000.0 : 0.0);
}

static int run_client(int argc, char **argv) {
  const char *addr = NULL, *out = NULL, *samples = NULL;
  const char *sleeps_s = "0", *weights_s = NULL;
  long port = -1;
  uint64_t seed = 42;
  int have_requests = 0;
  memset(&C, 0, sizeof C);
  C.concurrency = 1;
  C.resp_len = 64;
  C.timeout_ms = 10000;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--connect"))
      addr = NEXT();
    else if (!strcmp(a, "--port"))
      port = (long)parse_u64(NEXT(), "--port");
    else if (!strcmp(a, "--requests"))
      C.requests = parse_u64(NEXT(), "--requests"), have_requests = 1;
    else if (!strcmp(a, "--concurrency"))
      C.concurrency = (int)parse_u64(NEXT(), "--concurrency");
    else if (!strcmp(a, "--sleeps"))
      sleeps_s = NEXT();
    else if (!strcmp(a, "--weights"))
      weights_s = NEXT();
    else if (!strcmp(a, "--new-conn"))
      C.new_conn = 1;
    else if (!strcmp(a, "--resp-len"))
      C.resp_len = (uint32_t)parse_u64(NEXT(), "--resp-len");
    else if (!strcmp(a, "--rate"))
      C.rate = parse_double(NEXT(), "--rate");
    else if (!strcmp(a, "--seed"))
      seed = parse_u64(NEXT(), "--seed");
    else if (!strcmp(a, "--timeout-ms"))
      C.timeout_ms = (int)parse_u64(NEXT(), "--timeout-ms");
    else if (!strcmp(a, "--out"))
      out = NEXT();
    else if (!strcmp(a, "--samples"))
      samples = NEXT();
    else if (!strcmp(a, "--http"))
      http_mode = 1;
    else {
      char buf[256];
      snprintf(buf, sizeof buf, "unknown client option '%s'", a);
      die_usage(buf);
    }
  }
  if (!addr) die_usage("client needs --connect");
  if (port < 1 || port > 65535) die_usage("client needs --port 1..65535");
  if (!have_requests || C.requests == 0) die_usage("client needs --requests N (N > 0)");
  if (C.requests > 100000000ull) die_usage("--requests is capped at 100000000");
  if (C.concurrency < 1 || C.concurrency > 10000) die_usage("--concurrency must be 1..10000");
  if (C.resp_len < REQ_LEN) C.resp_len = REQ_LEN;
  if (C.resp_len > MAX_RESP_LEN) die_usage("--resp-len too large");

  uint64_t sl[MAX_SLEEPS], wt[MAX_SLEEPS];
  C.nsleeps = parse_list(sleeps_s, sl, MAX_SLEEPS, "--sleeps");
  if (C.nsleeps == 0) die_usage("--sleeps is empty");
  int nw = C.nsleeps;
  if (weights_s) {
    nw = parse_list(weights_s, wt, MAX_SLEEPS, "--weights");
    if (nw != C.nsleeps) die_usage("--weights must have as many entries as --sleeps");
  } else {
    for (int i = 0; i < nw; i++) wt[i] = 1;
  }
  uint64_t wsum = 0;
  for (int i = 0; i < C.nsleeps; i++) {
    if (sl[i] > 60000000ull) die_usage("a sleep is over 60 s");
    for (int j = 0; j < i; j++)
      if (sl[j] == sl[i]) die_usage("--sleeps has duplicates");
    C.sleeps[i] = (uint32_t)sl[i];
    wsum += wt[i];
  }
  if (wsum == 0) die_usage("--weights sum to 0");

  if (resolve(addr, (uint16_t)port, 0, &C.ss, &C.sl) < 0) return 2;
  raise_nofile();
  signal(SIGPIPE, SIG_IGN);
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);

  plan = malloc(C.requests);
  lat_ns = malloc(sizeof *lat_ns * C.requests);
  conn_ns = malloc(sizeof *conn_ns * C.requests);
  if (!plan || !lat_ns || !conn_ns) {
    perror("mpload: malloc");
    return 2;
  }
  /* deterministic plan: request i's sleep depends only on (seed, i) */
  for (uint64_t i = 0; i < C.requests; i++) {
    uint64_t r = splitmix64_at(seed, i) % wsum;
    int b = 0;
    while (r >= wt[b]) r -= wt[b++];
    plan[i] = (uint8_t)b;
    lat_ns[i] = NS_ERR;
    conn_ns[i] = NS_ERR;
  }

  int nthreads = C.concurrency;
  pthread_t *th = calloc((size_t)nthreads, sizeof *th);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, THREAD_STACK);
  pthread_barrier_init(&bar, NULL, (unsigned)nthreads + 1);
  for (int i = 0; i < nthreads; i++) {
    if (pthread_create(&th[i], &attr, cl_thread, NULL) != 0) {
      perror("mpload: pthread_create");
      _exit(2);
    }
  }
  pthread_barrier_wait(&bar); /* all keep-alive connections made */
  start_ns = now_ns();
  pthread_barrier_wait(&bar); /* go */
  for (int i = 0; i < nthreads; i++) pthread_join(th[i], NULL);
  uint64_t end_ns = now_ns();
  double elapsed = (double)(end_ns - start_ns) / 1e9;

  /* collect */
  uint64_t n = C.requests;
  uint64_t *all = malloc(sizeof *all * n);
  uint64_t *conn = malloc(sizeof *conn * n);
  size_t k = 0, kc = 0;
  for (uint64_t i = 0; i < n; i++) {
    if (lat_ns[i] != NS_ERR) all[k++] = lat_ns[i];
    if (conn_ns[i] != NS_ERR) conn[kc++] = conn_ns[i];
  }
  if (samples) {
    FILE *sf = fopen(samples, "w");
    if (!sf) {
      fprintf(stderr, "mpload: cannot write %s: %s\n", samples, strerror(errno));
      return 2;
    }
    for (size_t i = 0; i < k; i++) fprintf(sf, "%" PRIu64 "\n", all[i]);
    fclose(sf);
  }
  qsort(all, k, sizeof *all, cmp_u64);
  qsort(conn, kc, sizeof *conn, cmp_u64);

  FILE *f = stdout;
  if (out) {
    f = fopen(out, "w");
    if (!f) {
      fprintf(stderr, "mpload: cannot write %s: %s\n", out, strerror(errno));
      return 2;
    }
  }
  uint64_t errors = atomic_load(&cl_errors);
  fprintf(f, "{\"requests\":%zu,\"errors\":%" PRIu64 ",\"connections\":%" PRIu64 ",\"elapsed_s\":%.6f,\"rps\":%.1f,", k,
          errors, (uint64_t)atomic_load(&cl_connections), elapsed, elapsed > 0 ? (double)k / elapsed : 0.0);
  fprintf(f,
          "\"error_kinds\":{\"connect\":%" PRIu64 ",\"io\":%" PRIu64 ",\"eof\":%" PRIu64 ",\"timeout\":%" PRIu64
          ",\"mismatch\":%" PRIu64 "},",
          (uint64_t)atomic_load(&err_connect), (uint64_t)atomic_load(&err_io), (uint64_t)atomic_load(&err_eof),
          (uint64_t)atomic_load(&err_timeout), (uint64_t)atomic_load(&err_mismatch));
  fprintf(f, "\"latency_us\":");
  print_stats(f, all, k, 1);
  fprintf(f, ",\"by_sleep\":{");
  uint64_t *tmp = malloc(sizeof *tmp * n);
  for (int b = 0; b < C.nsleeps; b++) {
    size_t m = 0;
    for (uint64_t i = 0; i < n; i++)
      if (plan[i] == b && lat_ns[i] != NS_ERR) tmp[m++] = lat_ns[i];
    qsort(tmp, m, sizeof *tmp, cmp_u64);
    fprintf(f, "%s\"%u\":", b ? "," : "", C.sleeps[b]);
    print_stats(f, tmp, m, 0);
  }
  fprintf(f, "}");
  if (C.new_conn) {
    fprintf(f, ",\"connect_us\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f}", us(pct(conn, kc, 50)),
            us(pct(conn, kc, 90)), us(pct(conn, kc, 99)), us(kc ? conn[kc - 1] : 0));
  }
  fprintf(f,
          ",\"config\":{\"requests\":%" PRIu64
          ",\"concurrency\":%d,\"new_conn\":%s,\"resp_len\":%u,\"rate\":%.3f,"
          "\"seed\":%" PRIu64 "}}\n",
          C.requests, C.concurrency, C.new_conn ? "true" : "false", C.resp_len, C.rate, seed);
  if (f != stdout)
    fclose(f);
  else
    fflush(f);
  return errors > 0 ? 1 : 0;
}

int main(int argc, char **argv) {
  if (argc < 2) die_usage("missing mode");
  if (!strcmp(argv[1], "server")) return run_server(argc - 2, argv + 2);
  if (!strcmp(argv[1], "client")) return run_client(argc - 2, argv + 2);
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    die_usage("help");
  }
  die_usage("mode must be 'server' or 'client'");
  return 2;
}
