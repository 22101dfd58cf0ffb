// The container image (Containerfile), built offline by scripts/image.sh under a tag of this
// test's own, run under podman (runc; the ulimits of build/image/containers.conf, which
// image.sh writes) with the host's PID namespace and network, the way the DaemonSet runs it:
//  - privileged: `latency-probe --check` passes; the runtime stage has the host's Node and no
//    compiler;
//  - privileged, then with only capabilities (every one dropped, then the systemd unit's set
//    plus SYS_RESOURCE, as deploy/kubernetes does, read-only root, no new privileges):
//    latency-probe inside counts the HTTP requests a client on the host makes to a server on the
//    host over loopback exactly, client and server side, on /metrics scraped from the host and
//    in the final JSON report, and gives nothing up for lack of privilege;
//  - without CAP_BPF, or without CAP_PERFMON, it refuses to start (exit 3): both are needed.
// The test's containers and its image are removed by ID at the end. Kept between runs, as a
// cache: build/image/rootfs, the base image localhost/meshprobe-base:bookworm and the build
// stage's layers (podman image prune removes those; see docs/kubernetes.md).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { needsRoot, tempDir } from './helpers/probe.js';
import { freePort } from './helpers/servers.js';
import { repoRoot, runClient, startTestServer } from './helpers/workload.js';
import { onProcessExit } from './helpers/netns.js';
import type { LatencyReportRead } from './helpers/report-types.js';

const TAG = `localhost/meshprobe-test:${String(process.pid)}`;
const CONTAINERS_CONF = join(repoRoot, 'build', 'image', 'containers.conf');
const UNIT = join(repoRoot, 'deploy', 'systemd', 'meshprobe@.service');
const REQUESTS = 200;
const COUNT = 'meshprobe_request_duration_seconds_count';

/** podman with this project's containers.conf (runc, ulimits the VM allows); throws on a failure. */
function podman(args: string[], opts: { allowFail?: boolean; timeoutMs?: number } = {}) {
  const r = spawnSync('podman', args, {
    encoding: 'utf8',
    env: { ...process.env, CONTAINERS_CONF },
    timeout: opts.timeoutMs ?? 120_000,
  });
  if (r.error) throw r.error;
  if (!opts.allowFail && r.status !== 0) {
    throw new Error(`podman ${args.join(' ')}: exit ${String(r.status)}: ${r.stderr}`);
  }
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The host's mounts a probe needs, at the same paths: sysfs (BTF, tracefs, CPUs), bpffs, and the
 * host's cgroup tree (podman would mount the container's own over /sys/fs/cgroup: the cgroup2 root
 * is where cgroup_skb programs attach, and the cgroups of other processes are read against it). */
const HOST = [
  '--runtime',
  'runc',
  '--pid=host',
  '--network=host',
  '--cgroupns=host',
  '-v',
  '/sys:/sys:ro',
  '-v',
  '/sys/fs/cgroup:/sys/fs/cgroup:ro',
  '-v',
  '/sys/fs/bpf:/sys/fs/bpf',
];

/** The systemd unit's capabilities (AmbientCapabilities=), without CAP_: BPF, PERFMON, ... */
function unitCapabilities(): string[] {
  const line = /^AmbientCapabilities=(.+)$/m.exec(readFileSync(UNIT, 'utf8'));
  assert.ok(line, `${UNIT} has an AmbientCapabilities= line`);
  return line[1]
    .trim()
    .split(/\s+/)
    .map((c) => c.replace(/^CAP_/, ''));
}

/** Every capability dropped, then `caps`; as the DaemonSet's securityContext (see docs/kubernetes.md). */
function onlyCapabilities(caps: string[]): string[] {
  return [
    '--cap-drop',
    'ALL',
    '--cap-add',
    caps.join(','),
    // podman's default seccomp profile (containers-common 0.50, Debian 12) allows bpf() and
    // perf_event_open() only with CAP_SYS_ADMIN
    '--security-opt',
    'seccomp=unconfined',
    '--security-opt',
    'no-new-privileges',
    '--read-only',
    '--read-only-tmpfs=false',
  ];
}

/** Builds the image with scripts/image.sh under TAG; its ID. Removed (by ID) when the test ends. */
function buildImage(t: TestContext): string {
  const started = Date.now();
  const child = spawnSync('bash', [join(repoRoot, 'scripts', 'image.sh'), '--tag', TAG], {
    cwd: repoRoot,
    encoding: 'utf8',
    timeout: 900_000,
  });
  if (child.error) throw child.error;
  assert.equal(child.status, 0, `scripts/image.sh: ${child.stdout}${child.stderr}`);
  const line = /^image: (\S+) ([0-9a-f]{12}), (\d+) MB, built in (\d+) s/m.exec(child.stdout);
  assert.ok(line, `image.sh says what it built: ${child.stdout}`);
  assert.equal(line[1], TAG);
  const id = podman(['image', 'inspect', '--format', '{{.Id}}', TAG]).stdout.trim();
  assert.ok(id.startsWith(line[2]), `${id} is the image image.sh named`);
  const remove = () => {
    // only our tag: remove the image; another tag too (the same tree built by hand): only ours goes
    const tags = podman(['image', 'inspect', '--format', '{{json .RepoTags}}', id], { allowFail: true });
    if (tags.code !== 0) return;
    const names = JSON.parse(tags.stdout) as string[];
    if (names.every((n) => n === TAG)) podman(['rmi', id], { allowFail: true });
    else podman(['untag', id, TAG], { allowFail: true });
  };
  const unregister = onProcessExit(remove);
  t.after(() => {
    remove();
    unregister();
    assert.equal(podman(['image', 'exists', TAG], { allowFail: true }).code, 1, `${TAG} removed`);
  });
  t.diagnostic(`image ${TAG} ${line[2]}: ${line[3]} MB, scripts/image.sh took ${String(Date.now() - started)} ms`);
  return id;
}

interface Container {
  id: string;
  /** its output so far (podman logs: stdout and stderr) */
  logs(): string;
  /** SIGTERM (podman stop), waits; its exit code */
  stop(): number;
}

/** `podman run -d` of image with args; removed by ID when the test ends (or this process exits). */
function runDetached(t: TestContext, args: string[]): Container {
  const id = podman(['run', '-d', ...args]).stdout.trim();
  assert.match(id, /^[0-9a-f]{64}$/);
  const remove = () => podman(['rm', '-f', '-t', '0', id], { allowFail: true });
  const unregister = onProcessExit(remove);
  t.after(() => {
    remove();
    unregister();
    assert.equal(podman(['container', 'exists', id], { allowFail: true }).code, 1, `container ${id} removed`);
  });
  const logs = () => {
    const r = podman(['logs', id], { allowFail: true });
    return r.stdout + r.stderr;
  };
  return {
    id,
    logs,
    stop() {
      podman(['stop', '-t', '30', id], { timeoutMs: 60_000 });
      const code = Number(podman(['inspect', '--format', '{{.State.ExitCode}}', id]).stdout.trim());
      return code;
    },
  };
}

/** Waits until the probe in c says it is measuring (30 s at most). */
async function measuring(c: Container): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const out = c.logs();
    if (/measuring/.test(out)) return;
    const running = podman(['inspect', '--format', '{{.State.Running}}', c.id]).stdout.trim();
    if (running !== 'true') throw new Error(`the probe's container exited before measuring: ${out}`);
    if (Date.now() > deadline) throw new Error(`the probe is not measuring after 30 s: ${out}`);
    await sleep(200);
  }
}

/** The value of `name`{view="<view>"} in an exposition; exactly one such series. */
function viewCount(text: string, name: string, view: string): number | undefined {
  const hits = text
    .split('\n')
    .map((l) => new RegExp(`^${name}\\{(.*)\\} (\\S+)$`).exec(l))
    .filter((m): m is RegExpExecArray => m !== null && m[1].split(',').includes(`view="${view}"`));
  assert.ok(hits.length <= 1, `${name}{view="${view}"}: ${String(hits.length)} series`);
  return hits.length === 1 ? Number(hits[0][2]) : undefined;
}

/**
 * latency-probe in a container (podman `security` args), /metrics on a free loopback port of the
 * host, filtered to the port of an HTTP server the test starts on the host; a client on the host
 * makes REQUESTS requests. Counts on /metrics (scraped from the host) and in the final report.
 */
async function countsHostRequests(t: TestContext, security: string[]): Promise<void> {
  const server = await startTestServer(t, { http: true });
  const metricsPort = await freePort();
  const out = tempDir();
  const c = runDetached(t, [
    ...HOST,
    ...security,
    '-v',
    `${out}:/out`,
    TAG,
    'latency-probe',
    '--format',
    'prometheus',
    '--listen',
    '127.0.0.1',
    '--port',
    String(metricsPort),
    '--filter',
    `port=${String(server.port)}`,
    '--output',
    '/out/report.json',
  ]);
  await measuring(c);
  const warnings = c
    .logs()
    .split('\n')
    .filter((l) => /warn/i.test(l));
  assert.deepEqual(warnings, [], 'nothing given up for lack of privilege');

  const client = await runClient({
    addr: '127.0.0.1',
    port: server.port,
    requests: REQUESTS,
    concurrency: 2,
    http: true,
  });
  assert.equal(client.requests, REQUESTS);
  // records reach the figures asynchronously: scrape until both views have them (10 s at most)
  let text = '';
  const deadline = Date.now() + 10_000;
  for (;;) {
    const r = await fetch(`http://127.0.0.1:${String(metricsPort)}/metrics`, { signal: AbortSignal.timeout(5000) });
    assert.equal(r.status, 200);
    text = await r.text();
    const done = ['client', 'server'].every((v) => (viewCount(text, COUNT, v) ?? 0) >= REQUESTS);
    if (done || Date.now() > deadline) break;
    await sleep(100);
  }
  assert.equal(viewCount(text, COUNT, 'client'), REQUESTS, `client view on /metrics:\n${text}`);
  assert.equal(viewCount(text, COUNT, 'server'), REQUESTS, 'server view on /metrics');
  assert.match(text, /^meshprobe_build_info\{.*probe="latency-probe".*\} 1$/m);

  await server.stop();
  const code = c.stop();
  assert.equal(code, 0, `the probe's exit code after SIGTERM: ${c.logs()}`);
  const report = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8')) as LatencyReportRead;
  assert.equal(report.metrics.client.total_requests, REQUESTS, 'client view in the report');
  assert.equal(report.metrics.server.total_requests, REQUESTS, 'server view in the report');
  assert.ok((report.exports?.prometheus?.scrapes ?? 0) >= 1, JSON.stringify(report.exports));
  t.diagnostic(`counted ${String(REQUESTS)} of ${String(REQUESTS)} requests, both sides`);
}

/** podman run --rm to completion: exit code and output. */
function runToEnd(args: string[]) {
  return new Promise<{ code: number | null; out: string }>((resolve, reject) => {
    const p = spawn('podman', ['run', '--rm', ...args], {
      env: { ...process.env, CONTAINERS_CONF },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
    p.on('error', reject);
    p.on('close', (code) => {
      resolve({ code, out });
    });
  });
}

test('the container image: built offline, measures host traffic with host PID and network', async (t) => {
  if (!needsRoot(t)) return;
  const has = spawnSync('podman', ['--version'], { encoding: 'utf8' });
  assert.ok(!has.error, 'podman is missing: run scripts/setup.sh (Debian packages podman, runc, debootstrap)');
  buildImage(t);
  const before = new Set(readdirSync('/sys/fs/bpf'));

  await t.test('privileged: --check passes; the host Node, no compiler', async () => {
    const check = await runToEnd([
      '--runtime',
      'runc',
      '--privileged',
      '--pid=host',
      '--network=host',
      '-v',
      '/sys:/sys:ro',
      '-v',
      '/sys/fs/bpf:/sys/fs/bpf',
      TAG,
      'latency-probe',
      '--check',
    ]);
    assert.equal(check.code, 0, check.out);
    assert.match(check.out, /^BTF: yes/m);
    assert.match(check.out, /latency-probe: ready/);
    const inside = await runToEnd([
      '--runtime',
      'runc',
      TAG,
      'sh',
      '-c',
      'node -v; for c in clang gcc cc g++ make llc; do command -v $c; done; ls /usr/include/node 2>/dev/null; true',
    ]);
    assert.equal(inside.code, 0, inside.out);
    assert.equal(inside.out, `${process.version}\n`, 'the Node that runs this test, and nothing else found');
  });

  await t.test('privileged: every host request counted, client and server side, /metrics from the host', (tt) =>
    countsHostRequests(tt, ['--privileged']),
  );

  const caps = [...unitCapabilities(), 'SYS_RESOURCE'];
  await t.test(`capabilities only (${caps.join(', ')}): the same counts, nothing given up`, (tt) =>
    countsHostRequests(tt, onlyCapabilities(caps)),
  );

  await t.test('without CAP_BPF, or without CAP_PERFMON, the probe refuses to start (exit 3)', async () => {
    for (const missing of ['BPF', 'PERFMON']) {
      const r = await runToEnd([
        ...HOST,
        ...onlyCapabilities(caps.filter((c) => c !== missing)),
        TAG,
        'latency-probe',
        '--duration',
        '1s',
        '--output',
        '-',
      ]);
      assert.equal(r.code, 3, `without ${missing}: ${r.out}`);
    }
  });

  // nothing pinned in the host's bpffs by the containers
  assert.deepEqual(
    readdirSync('/sys/fs/bpf').filter((f) => !before.has(f)),
    [],
    'bpffs as before',
  );
  assert.ok(existsSync(CONTAINERS_CONF));
});
