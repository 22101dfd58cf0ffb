// --filter and --services: parsing, resolution of names into what the kernel
// compares (bpf/filter.h layout checked against the C compiler), and each
// filter kind against real traffic: pid, comm, port lists, AND of clauses,
// netns, cgroup, Kubernetes namespace, service (a --services entry, comm:port).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, rmdirSync, statSync, writeFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseFilter, parseFilters } from '../src/filter/parse.js';
import { parseServices, matchService } from '../src/filter/services.js';
import {
  cgroup2Root,
  cgroupInfo,
  podCgroups,
  podUids,
  resolveFilters,
  type ResolveEnv,
} from '../src/filter/resolve.js';
import { encodeSelectors, SELECTOR } from '../src/filter/kernel.js';
import { MeshprobeError } from '../src/errors.js';
import { mploadBinary, runClient, startTestServer, type RunningServer } from './helpers/workload.js';
import { createVethPair, onProcessExit } from './helpers/netns.js';
import type { AfterHook } from './helpers/servers.js';
import { needsRoot, runCli, startProbe, tempDir } from './helpers/probe.js';
import { repoRoot } from './helpers/workload.js';
import type { LatencyReportRead } from './helpers/report-types.js';

const usage = (fn: () => unknown, re: RegExp) => {
  assert.throws(fn, (e: unknown) => e instanceof MeshprobeError && e.exitCode === 2 && re.test(e.message), String(re));
};

test('parse: key=value, comma lists, and one-line errors for bad expressions', () => {
  assert.deepEqual(parseFilter('port=80,443'), { key: 'port', values: ['80', '443'], text: 'port=80,443' });
  assert.deepEqual(
    parseFilters(['service=api-server', 'namespace=production']).map((c) => c.key),
    ['service', 'namespace'],
  );
  usage(() => parseFilter('port'), /use key=value/);
  usage(() => parseFilter('colour=red'), /unknown --filter key "colour".*port, pid, comm/);
  usage(() => parseFilter('port=http'), /port "http" must be a number/);
  usage(() => parseFilter('port=70000'), /1 to 65535/);
  usage(() => parseFilter('pid=-1'), /process id/);
  usage(() => parseFilter('port=80,'), /empty value/);
  usage(() => parseFilter('comm=a-name-longer-than-15'), /15 characters/);
  usage(() => parseFilter('namespace=Prod_1'), /not a Kubernetes namespace/);
});

test('services file: JSON and line forms, first match wins, kinds all hold', () => {
  const lines = parseServices(
    '# name  selectors\napi-server port=8080,8443 comm=api\nbilling netns=billing\nweb port=80\n',
  );
  assert.deepEqual(lines[0], { name: 'api-server', ports: [8080, 8443], comm: ['api'], cgroup: [], netns: [] });
  const json = parseServices(JSON.stringify({ 'api-server': { ports: [8080, 8443], comm: 'api' }, web: { port: 80 } }));
  assert.deepEqual(json[0], lines[0]);
  const ino = (n: string) => (n === 'billing' ? 4026532000 : undefined);
  assert.equal(matchService(lines, { port: 8080, comm: 'api' }, ino), 'api-server');
  assert.equal(matchService(lines, { port: 8080, comm: 'other' }, ino), undefined, 'comm must hold too');
  assert.equal(matchService(lines, { port: 5432, netns: 4026532000 }, ino), 'billing');
  assert.equal(matchService(lines, { port: 80 }, ino), 'web');
  usage(() => parseServices('x port=1\nx port=2'), /defined twice/);
  usage(() => parseServices('x'), /no ports, comm, cgroup or netns/);
  usage(() => parseServices('x port=99999'), /1-65535/);
  usage(() => parseServices('x colour=red'), /use port=, comm=/);
  usage(() => parseServices('{"x": {"colour": 1}}'), /unknown key "colour"/);
  usage(() => parseServices('{"x": '), /not valid JSON/);
});

test('struct mp_selector: the encoder uses the offsets the C compiler gives', () => {
  const src =
    `#include <stdio.h>\n#include <stddef.h>\n#include <linux/types.h>\n#include "${path.join(repoRoot, 'bpf', 'filter.h')}"\n` +
    'int main(void){printf("%zu %zu %zu %zu %zu %zu %zu %zu %d\\n", sizeof(struct mp_selector), offsetof(struct mp_selector, cgroup_id),' +
    'offsetof(struct mp_selector, tgid), offsetof(struct mp_selector, netns), offsetof(struct mp_selector, port),' +
    'offsetof(struct mp_selector, cgroup_slot), offsetof(struct mp_selector, clause), offsetof(struct mp_selector, comm), MP_MAX_SELECTORS);return 0;}';
  const dir = tempDir();
  writeFileSync(path.join(dir, 'l.c'), src);
  execFileSync('cc', ['-o', path.join(dir, 'l'), path.join(dir, 'l.c')]);
  const [size, cg, tgid, netns, port, slot, clause, comm, max] = execFileSync(path.join(dir, 'l'), { encoding: 'utf8' })
    .trim()
    .split(' ')
    .map(Number);
  assert.deepEqual(
    { size, cg, tgid, netns, port, slot, clause, comm },
    {
      size: SELECTOR.size,
      cg: SELECTOR.cgroup_id,
      tgid: SELECTOR.tgid,
      netns: SELECTOR.netns,
      port: SELECTOR.port,
      slot: SELECTOR.cgroup_slot,
      clause: SELECTOR.clause,
      comm: SELECTOR.comm,
    },
  );
  const bytes = encodeSelectors([
    { clause: 0, cgroupId: 5n, cgroupDir: '/sys/fs/cgroup/a' },
    { clause: 1, port: 8080, comm: 'nginx', tgid: 42, cgroupId: 7n, cgroupDir: '/sys/fs/cgroup/b', netns: 99 },
  ]).subarray(size);
  assert.equal(bytes.length, (max - 1) * size);
  const dv = new DataView(bytes.buffer, bytes.byteOffset);
  assert.equal(dv.getUint16(SELECTOR.port, true), 8080);
  assert.equal(dv.getUint32(SELECTOR.tgid, true), 42);
  assert.equal(dv.getBigUint64(SELECTOR.cgroup_id, true), 7n);
  assert.equal(bytes[SELECTOR.cgroup_slot], 1, 'the second distinct cgroup');
  assert.equal(bytes[SELECTOR.clause], 1);
  assert.equal(Buffer.from(bytes.subarray(SELECTOR.comm, SELECTOR.comm + 5)).toString(), 'nginx');
  assert.equal(bytes[SELECTOR.comm + 5], 0);
});

/**
 * A fake node: a kubelet pod log directory and pod cgroups under a private
 * subtree of the cgroup2 mount. Its cleanup is registered before the first
 * cgroup is made (the test's end, and this process's exit if the test never
 * gets there); it moves out whatever process is still inside, then removes
 * the cgroups.
 */
function fakeNode(t: AfterHook, root: string, pods: { ns: string; name: string; uid: string }[]) {
  const podsDir = tempDir();
  const made: string[] = [];
  const cleanup = () => {
    for (const d of [...made].reverse()) {
      try {
        for (const pid of readFileSync(path.join(d, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
          writeFileSync(path.join(root, 'cgroup.procs'), pid);
        }
        rmdirSync(d);
        made.splice(made.indexOf(d), 1);
      } catch {
        /* gone already, or a process that is exiting: the exit-time cleanup tries again */
      }
    }
  };
  const unregister = onProcessExit(cleanup);
  t.after(() => {
    cleanup();
    if (made.length === 0) unregister();
  });
  const mk = (rel: string) => {
    const abs = path.join(root, rel);
    if (!existsSync(abs)) {
      mkdirSync(abs);
      made.push(abs);
    }
  };
  const base = `/mp-test-${process.pid}`;
  const scopes: Record<string, string> = {};
  mk(base);
  mk(`${base}/kubepods.slice`);
  mk(`${base}/kubepods.slice/kubepods-besteffort.slice`);
  for (const p of pods) {
    mkdirSync(path.join(podsDir, `${p.ns}_${p.name}_${p.uid}`));
    const podSlice = `${base}/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${p.uid.replace(/-/g, '_')}.slice`;
    mk(podSlice);
    const scope = `${podSlice}/cri-containerd-${'ab'.repeat(32)}.scope`;
    mk(scope);
    scopes[p.name] = scope;
  }
  return { podsDir, scopes };
}

test('resolve: netns names, cgroup paths (id = inode, level = depth), namespaces through pod UIDs', (t) => {
  if (!needsRoot(t)) return;
  const root = cgroup2Root();
  assert.ok(root, 'a cgroup2 mount');
  const node = fakeNode(t, root, [
    { ns: 'production', name: 'web-0', uid: '0b5c1a2e-1111-4c3b-9a53-2f1f6f5e0001' },
    { ns: 'staging', name: 'web-0', uid: '0b5c1a2e-2222-4c3b-9a53-2f1f6f5e0002' },
  ]);
  const env: ResolveEnv = { netnsDir: '/run/netns', podsDir: node.podsDir, cgroupRoot: root };
  assert.deepEqual(podUids('production', node.podsDir), ['0b5c1a2e-1111-4c3b-9a53-2f1f6f5e0001']);
  const cgs = podCgroups(podUids('production', node.podsDir), root);
  assert.equal(cgs.length, 1);
  assert.match(cgs[0], /kubepods-besteffort-pod0b5c1a2e_1111_4c3b_9a53_2f1f6f5e0001\.slice$/);
  const info = cgroupInfo(cgs[0], root);
  assert.ok(info, `cgroup ${cgs[0]} found`);
  assert.equal(info.id, statSync(path.join(root, cgs[0]), { bigint: true }).ino);
  assert.equal(info.dir, path.join(root, cgs[0]));
  const r = resolveFilters(parseFilters(['namespace=production', 'port=80,443']), [], env);
  assert.deepEqual(
    r.selectors.map((s) => s.clause),
    [0, 1, 1],
  );
  assert.equal(r.selectors[0].cgroupId, info.id);
  usage(() => resolveFilters(parseFilters(['namespace=nowhere']), [], env), /no pod of namespace "nowhere"/);
  usage(() => resolveFilters(parseFilters(['netns=mp-no-such-ns']), [], env), /no network namespace "mp-no-such-ns"/);
  usage(() => resolveFilters(parseFilters(['cgroup=/mp-no-such-cgroup']), [], env), /no cgroup \/mp-no-such-cgroup/);
  usage(() => resolveFilters(parseFilters(['pid=4000000']), [], env), /no process with pid 4000000/);
  usage(() => resolveFilters(parseFilters(['service=10.0.0.1:80']), [], env), /peer address.*port=80/);
  const svc = parseServices('api port=8080,8443 comm=api');
  assert.deepEqual(
    resolveFilters(parseFilters(['service=api']), svc, env).selectors.map((s) => [s.port, s.comm]),
    [
      [8080, 'api'],
      [8443, 'api'],
    ],
  );
  assert.deepEqual(resolveFilters(parseFilters(['service=nginx:80']), [], env).selectors, [
    { clause: 0, comm: 'nginx', port: 80 },
  ]);
});

// --- real traffic -----------------------------------------------------------

interface Counts {
  client: number;
  server: number;
  report: LatencyReportRead;
}

/** Runs the probe with `args` while `traffic` runs; returns what each view counted. */
async function probeWith(
  t: AfterHook,
  args: string[],
  traffic: () => Promise<void>,
  env?: NodeJS.ProcessEnv,
): Promise<Counts> {
  const probe = startProbe<LatencyReportRead>('latency-probe', args, { env });
  t.after(() => probe.stop('SIGKILL'));
  await probe.ready;
  await traffic();
  await sleep(150);
  const exit = await probe.stop('SIGINT');
  assert.equal(exit.code, 0, exit.stderr);
  assert.ok(exit.report, `no report: ${exit.stderr}`);
  const m = exit.report.metrics;
  return { client: m.client.total_requests, server: m.server.total_requests, report: exit.report };
}

async function servers(
  t: AfterHook,
  n: number,
  opts: { netns?: string; addr?: string } = {},
): Promise<RunningServer[]> {
  const out: RunningServer[] = [];
  for (let i = 0; i < n; i++) out.push(await startTestServer(t, opts));
  return out;
}

const hit = (s: RunningServer, requests: number, extra: Record<string, unknown> = {}) =>
  runClient({ addr: s.addr, port: s.port, requests, concurrency: 2, ...extra }).then(() => undefined);

test('pid= and comm=: only the sockets of that process, decided in the kernel', async (t) => {
  if (!needsRoot(t)) return;
  const [a, b] = await servers(t, 2);
  const r = await probeWith(t, ['--filter', `pid=${a.pid}`], async () => {
    await hit(a, 300);
    await hit(b, 200);
  });
  assert.deepEqual([r.client, r.server], [0, 300], 'server A only: no client view, every request of A');
  assert.ok(r.report.pipeline.sockets_filtered > 0);
  assert.deepEqual(r.report.pipeline.filters, [`pid=${a.pid}`]);

  // the client under another name (its comm): only the client view of its requests
  const renamed = path.join(tempDir(), 'mpclient');
  copyFileSync(mploadBinary, renamed);
  const c = await probeWith(t, ['--filter', 'comm=mpclient'], async () => {
    await runClient({ addr: a.addr, port: a.port, requests: 250, bin: renamed });
    await hit(b, 200);
  });
  assert.deepEqual([c.client, c.server], [250, 0]);
});

test('port=A,B is any of them; two --filter options must both hold', async (t) => {
  if (!needsRoot(t)) return;
  const [a, b, c] = await servers(t, 3);
  const any = await probeWith(t, ['--filter', `port=${a.port},${b.port}`], async () => {
    await hit(a, 200);
    await hit(b, 150);
    await hit(c, 100);
  });
  assert.deepEqual([any.client, any.server], [350, 350]);
  const both = await probeWith(t, ['--filter', `port=${a.port},${b.port}`, '--filter', `pid=${b.pid}`], async () => {
    await hit(a, 200);
    await hit(b, 150);
    await hit(c, 100);
  });
  assert.deepEqual([both.client, both.server], [0, 150]);
});

test('netns=NAME: only sockets in that network namespace (a veth pair the test made)', async (t) => {
  if (!needsRoot(t)) return;
  const pair = createVethPair();
  t.after(() => {
    pair.cleanup();
  });
  const [inB] = await servers(t, 1, { netns: pair.nsB, addr: pair.addrB4 });
  const [local] = await servers(t, 1);
  const r = await probeWith(t, ['--filter', `netns=${pair.nsB}`], async () => {
    await runClient({ addr: pair.addrB4, port: inB.port, requests: 300, netns: pair.nsA });
    await hit(local, 200);
  });
  assert.deepEqual([r.client, r.server], [0, 300], 'the server side in nsB only');
  const both = await probeWith(t, ['--filter', `netns=${pair.nsA},${pair.nsB}`], async () => {
    await runClient({ addr: pair.addrB4, port: inB.port, requests: 300, netns: pair.nsA });
    await hit(local, 200);
  });
  assert.deepEqual([both.client, both.server], [300, 300]);
});

/**
 * Moves a test server into a cgroup v2 directory, and back to the root if
 * this process exits while the server still runs there: the exit handler goes
 * once the server has stopped, and checks that the pid is still in our cgroup
 * (never a process that took its number).
 */
function moveInto(root: string, rel: string, s: RunningServer): void {
  writeFileSync(path.join(root, rel, 'cgroup.procs'), String(s.pid));
  const unregister = onProcessExit(() => {
    try {
      if (readFileSync(`/proc/${s.pid}/cgroup`, 'utf8').trim().endsWith(`:${rel}`))
        writeFileSync(path.join(root, 'cgroup.procs'), String(s.pid));
    } catch {
      /* it ended */
    }
  });
  void s.exited.then(unregister);
}

test('cgroup=PATH and namespace=NS: the process is in that cgroup or below it (pods found through their UIDs)', async (t) => {
  if (!needsRoot(t)) return;
  const root = cgroup2Root();
  assert.ok(root, 'a cgroup2 mount');
  const node = fakeNode(t, root, [
    { ns: 'production', name: 'api-0', uid: '7d3c1a2e-1111-4c3b-9a53-2f1f6f5e0001' },
    { ns: 'staging', name: 'api-1', uid: '7d3c1a2e-2222-4c3b-9a53-2f1f6f5e0002' },
  ]);
  const [prod, staging, other] = await servers(t, 3);
  moveInto(root, node.scopes['api-0'], prod);
  moveInto(root, node.scopes['api-1'], staging);
  assert.match(readFileSync(`/proc/${prod.pid}/cgroup`, 'utf8'), /kubepods-besteffort-pod7d3c1a2e_1111/);

  const traffic = async () => {
    await hit(prod, 300);
    await hit(staging, 200);
    await hit(other, 100);
  };
  const ns = await probeWith(t, ['--filter', 'namespace=production'], traffic, { MESHPROBE_PODS_DIR: node.podsDir });
  assert.deepEqual([ns.client, ns.server], [0, 300], 'the production pod only');
  const conn = ns.report.metrics.connections.find((c) => c.role === 'server');
  assert.ok(conn, 'a server connection');
  assert.ok(conn.cgroup !== null, 'the report names the cgroup');
  assert.match(conn.cgroup, /kubepods-besteffort-pod7d3c1a2e_1111.*\.scope$/, 'the report names the cgroup');

  // a parent cgroup holds every pod below it
  const parent = `/mp-test-${process.pid}/kubepods.slice`;
  const cg = await probeWith(t, ['--filter', `cgroup=${parent}`], traffic);
  assert.deepEqual([cg.client, cg.server], [0, 500]);
});

test('service=: a --services entry (named in the report) and the default comm:port', async (t) => {
  if (!needsRoot(t)) return;
  const [a, b] = await servers(t, 2);
  const file = path.join(tempDir(), 'services.txt');
  writeFileSync(file, `# test services\napi-server port=${a.port}\nbackend port=${b.port} comm=mpload\n`);
  const r = await probeWith(t, ['--services', file, '--filter', 'service=api-server'], async () => {
    await hit(a, 300);
    await hit(b, 200);
  });
  assert.deepEqual([r.client, r.server], [300, 300], 'a port-only entry: both sides of its traffic');
  const names = r.report.metrics.services.map((s) => `${s.service}/${s.role}/${s.requests}`).sort();
  assert.deepEqual(names, ['api-server/client/300', 'api-server/server/300']);

  const d = await probeWith(t, ['--filter', `service=mpload:${b.port}`], async () => {
    await hit(a, 300);
    await hit(b, 200);
  });
  assert.deepEqual([d.client, d.server], [200, 200], 'mpload:PORT: the client is mpload too, so both sides hold');
  const c = await probeWith(t, ['--services', file, '--filter', 'service=api-server,backend'], async () => {
    await hit(a, 300);
    await hit(b, 200);
  });
  assert.deepEqual([c.client, c.server], [500, 500]);
  const named = c.report.metrics.services.map((s) => `${s.service}/${s.role}`).sort();
  assert.deepEqual(named, ['api-server/client', 'api-server/server', 'backend/client', 'backend/server']);
});

test('bad filters and services files: one line, exit 2, nothing loaded', (t) => {
  if (!needsRoot(t)) return;
  for (const [args, re] of [
    [['--filter', 'colour=red'], /unknown --filter key "colour"/],
    [['--filter', 'port=abc'], /port "abc" must be a number/],
    [['--filter', 'netns=mp-no-such-ns'], /no network namespace/],
    [['--filter', 'pid=4000000'], /no process with pid/],
    [['--filter', 'namespace=nowhere'], /no pod of namespace "nowhere"/],
    [['--services', '/nonexistent/services.json'], /cannot read --services.*ENOENT/],
  ] as const) {
    const r = runCli('latency-probe', ['--duration', '1', ...args]);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
  }
});
