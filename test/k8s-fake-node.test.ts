// The fake Kubernetes node (test/helpers/fake-node.ts) on the real cgroup2
// mount, read back by K8sIdentity (src/k8s/identity.ts): both cgroup drivers,
// a process moved into a container's cgroup named by its cgroup id (the inode
// the kernel reports), a pod deleted (its process back where it came from,
// its names gone after the grace period), and nothing left afterwards. Needs
// root (cgroups); loads no BPF and makes no traffic.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { once } from 'node:events';
import path from 'node:path';
import { cgroup2Root } from '../src/filter/resolve.js';
import { K8sIdentity, podServiceName } from '../src/k8s/identity.js';
import { cgroupOf, createFakeNode, type FakeNode } from './helpers/fake-node.js';

/** Skips outside CI when not root; under CI=true that is a failure instead. */
function needsRootCgroups(t: TestContext): string | undefined {
  const root = cgroup2Root();
  if (process.getuid?.() === 0 && root !== undefined) return root;
  const why = root === undefined ? 'a cgroup2 mount' : 'root (cgroups)';
  if (process.env.CI === 'true') throw new Error(`this test needs ${why}, and CI must run it`);
  t.skip(`needs ${why}`);
  return undefined;
}

function sleeper(t: TestContext): ChildProcess & { pid: number } {
  const child = spawn('sleep', ['300'], { stdio: 'ignore' });
  const pid = child.pid;
  assert.ok(pid !== undefined, 'sleep started');
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit');
      process.kill(pid, 'SIGKILL');
      await exited;
    }
  });
  return Object.assign(child, { pid });
}

test('a fake node of each driver: processes in pod containers named by cgroup id; a deleted pod expires', (t) => {
  const root = needsRootCgroups(t);
  if (root === undefined) return;
  const nodes: FakeNode[] = [];
  t.after(() => {
    for (const n of nodes) n.cleanup();
  });
  const sd = createFakeNode({ driver: 'systemd', root });
  nodes.push(sd);
  const fs = createFakeNode({ driver: 'cgroupfs', runtime: 'docker', root });
  nodes.push(fs);
  const cart = sd.addPod({ namespace: 'shop', name: 'cart-0', qos: 'burstable', containers: ['app', 'istio-proxy'] });
  const db = sd.addPod({ namespace: 'shop', name: 'db-0', qos: 'guaranteed', runtime: 'cri-o', containers: ['pg'] });
  const web = fs.addPod({ namespace: 'web', name: 'nginx-7c9d-x2', qos: 'besteffort', containers: ['nginx'] });
  const api = fs.addPod({ namespace: 'web', name: 'api-0', qos: 'guaranteed', runtime: 'cri-o', containers: ['api'] });

  assert.match(
    cart.container('istio-proxy').cgroupPath,
    /\/kubepods\.slice\/kubepods-burstable\.slice\/kubepods-burstable-pod[0-9a-f_]{36}\.slice\/cri-containerd-[0-9a-f]{64}\.scope$/,
  );
  assert.match(
    db.container('pg').cgroupPath,
    /\/kubepods\.slice\/kubepods-pod[0-9a-f_]{36}\.slice\/crio-[0-9a-f]{64}\.scope$/,
  );
  assert.match(web.container('nginx').cgroupPath, /\/kubepods\/besteffort\/pod[0-9a-f-]{36}\/[0-9a-f]{64}$/);
  assert.match(api.container('api').cgroupPath, /\/kubepods\/pod[0-9a-f-]{36}\/crio-[0-9a-f]{64}$/);

  const [a, b, c, d] = [sleeper(t), sleeper(t), sleeper(t), sleeper(t)];
  const origin = cgroupOf(a.pid);
  sd.moveInto(a.pid, cart.container('istio-proxy'));
  sd.moveInto(b.pid, db); // the pod's own cgroup: a sandbox process
  fs.moveInto(c.pid, web.container('nginx'));
  fs.moveInto(d.pid, api.container('api'));
  assert.equal(cgroupOf(a.pid), cart.container('istio-proxy').cgroupPath);
  assert.equal(cgroupOf(b.pid), db.cgroupPath);
  assert.equal(cgroupOf(c.pid), web.container('nginx').cgroupPath);

  let now = 1_000_000;
  const clock = () => now;
  // every cgroup exists before the first lookup: the cgroup walk (cgroupPathOf) sees them all at once
  const idSd = new K8sIdentity({
    cgroupRoot: root,
    podsDir: sd.podsDir,
    containersDir: sd.containersDir,
    now: clock,
    graceMs: 10_000,
  });
  const idFs = new K8sIdentity({ cgroupRoot: root, podsDir: fs.podsDir, containersDir: fs.containersDir, now: clock });
  const inodeOf = (pid: number) => statSync(path.join(root, cgroupOf(pid)), { bigint: true }).ino;

  const proxy = idSd.ofCgroupId(inodeOf(a.pid));
  assert.deepEqual(proxy, {
    namespace: 'shop',
    pod: 'cart-0',
    container: 'istio-proxy',
    podUid: cart.uid,
    containerId: cart.container('istio-proxy').id,
  });
  assert.equal(podServiceName(proxy), 'shop/cart-0');
  assert.deepEqual(idSd.ofCgroupId(db.cgroupId), { namespace: 'shop', pod: 'db-0', podUid: db.uid });
  assert.deepEqual(idSd.ofCgroupPath(cgroupOf(b.pid)), { namespace: 'shop', pod: 'db-0', podUid: db.uid });
  assert.deepEqual(idFs.ofCgroupId(inodeOf(c.pid)), {
    namespace: 'web',
    pod: 'nginx-7c9d-x2',
    container: 'nginx',
    podUid: web.uid,
    containerId: web.container('nginx').id,
  });
  assert.equal(idFs.ofCgroupId(api.container('api').cgroupId)?.container, 'api');
  assert.equal(idFs.ofCgroupPath(cgroupOf(d.pid))?.container, 'api');
  assert.equal(idSd.ofCgroupId(inodeOf(process.pid)), undefined, "this test's own process: a host process");
  assert.equal(idSd.ofCgroupId(statSync(path.join(root, sd.top), { bigint: true }).ino), undefined, 'the test parent');

  // the cart pod is deleted: its process goes back, its cgroups and log entries go
  sd.deletePod(cart);
  assert.equal(cgroupOf(a.pid), origin, 'moved back to the cgroup it came from');
  assert.equal(existsSync(cart.cgroupDir), false);
  assert.equal(existsSync(cart.logDir), false);
  now += 1000;
  assert.deepEqual(idSd.forget(), [], 'within the grace period');
  assert.deepEqual(
    idSd.gonePods().map((g) => [g.namespace, g.pod, g.podUid]),
    [['shop', 'cart-0', cart.uid]],
  );
  assert.equal(
    idSd.ofCgroupId(cart.container('istio-proxy').cgroupId)?.container,
    'istio-proxy',
    'named until it expires',
  );
  now += 10_000;
  assert.deepEqual(
    idSd.forget().map((g) => g.podUid),
    [cart.uid],
  );
  assert.equal(idSd.ofCgroupId(cart.container('istio-proxy').cgroupId), undefined, 'expired');
  assert.equal(idSd.ofCgroupId(db.cgroupId)?.pod, 'db-0', 'the other pod stays');

  // everything goes: processes back, no directory left
  for (const n of nodes) n.cleanup();
  for (const p of [b, c, d]) assert.equal(cgroupOf(p.pid), origin);
  for (const n of nodes) {
    assert.deepEqual(n.leftovers(), []);
    assert.equal(existsSync(path.join(root, n.top)), false, `${n.top} removed`);
    assert.equal(existsSync(n.podsDir), false);
  }
});
