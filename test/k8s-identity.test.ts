// Kubernetes identity from a node's own files (src/k8s/identity.ts), without
// root: the cgroup path forms of both kubelet cgroup drivers, the three
// runtimes and the three QoS classes, and names from kubelet-style pod and
// container log directories made in a temporary directory (a pod that
// appears, one that goes, malformed entries). The same on real cgroups:
// k8s-fake-node.test.ts (root).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  K8sIdentity,
  parseKubepodsCgroup,
  podServiceName,
  sidecarContainer,
  type KubepodsCgroup,
  type QosClass,
} from '../src/k8s/identity.js';
import { MeshprobeError } from '../src/errors.js';

const UID = '0b5c1a2e-1111-4c3b-9a53-2f1f6f5e0001';
const UID_ = UID.replace(/-/g, '_');
const CID = 'ab'.repeat(32);
const CID2 = 'cd'.repeat(32);
const STATIC_UID = '8daa50c3a64c9ff60bb9eab7b44b56fd';

function systemdPod(qos: QosClass, chain = 'kubepods', uid = UID_): string {
  const top = chain.split('-').map((_, i, a) => `${a.slice(0, i + 1).join('-')}.slice`);
  return qos === 'guaranteed'
    ? `/${top.join('/')}/${chain}-pod${uid}.slice`
    : `/${top.join('/')}/${chain}-${qos}.slice/${chain}-${qos}-pod${uid}.slice`;
}
function cgroupfsPod(qos: QosClass, uid = UID): string {
  return qos === 'guaranteed' ? `/kubepods/pod${uid}` : `/kubepods/${qos}/pod${uid}`;
}
const QOS: QosClass[] = ['guaranteed', 'burstable', 'besteffort'];

test('systemd driver: containerd, CRI-O and docker scopes in each QoS class', () => {
  const scopes = [
    ['cri-containerd', 'containerd'],
    ['crio', 'cri-o'],
    ['docker', 'docker'],
  ] as const;
  for (const qos of QOS) {
    for (const [prefix, runtime] of scopes) {
      const p = `${systemdPod(qos)}/${prefix}-${CID}.scope`;
      assert.deepEqual(parseKubepodsCgroup(p), { podUid: UID, containerId: CID, qos, runtime }, p);
    }
  }
  assert.equal(
    systemdPod('guaranteed'),
    `/kubepods.slice/kubepods-pod${UID_}.slice`,
    'guaranteed pods directly under kubepods.slice',
  );
});

test('cgroupfs driver: bare IDs (containerd, docker) and crio-<id> in each QoS class', () => {
  for (const qos of QOS) {
    assert.deepEqual(parseKubepodsCgroup(`${cgroupfsPod(qos)}/${CID}`), { podUid: UID, containerId: CID, qos });
    assert.deepEqual(parseKubepodsCgroup(`${cgroupfsPod(qos)}/crio-${CID}`), {
      podUid: UID,
      containerId: CID,
      qos,
      runtime: 'cri-o',
    });
  }
  assert.equal(cgroupfsPod('burstable'), `/kubepods/burstable/pod${UID}`);
});

test('prefixes: kind (--cgroup-root /kubelet), a node in a container, a test-owned parent, the colon form', () => {
  const want: KubepodsCgroup = { podUid: UID, containerId: CID, qos: 'besteffort', runtime: 'containerd' };
  const kind = `/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod${UID_}.slice/cri-containerd-${CID}.scope`;
  assert.equal(`${systemdPod('besteffort', 'kubelet-kubepods')}/cri-containerd-${CID}.scope`, kind);
  assert.deepEqual(parseKubepodsCgroup(kind), want);
  assert.deepEqual(parseKubepodsCgroup(`/system.slice/docker-${CID2}.scope${kind}`), want, 'kind seen from the host');
  assert.deepEqual(
    parseKubepodsCgroup(`/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod${UID_}.slice/crio-${CID}.scope`),
    { podUid: UID, containerId: CID, qos: 'guaranteed', runtime: 'cri-o' },
  );
  assert.deepEqual(
    parseKubepodsCgroup(
      `/docker/${CID2}/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/crio-${CID}.scope`,
    ),
    { podUid: UID, containerId: CID, qos: 'burstable', runtime: 'cri-o' },
    'minikube: a node in a docker container',
  );
  assert.deepEqual(parseKubepodsCgroup(`/meshprobe-test-42-1${systemdPod('burstable')}/docker-${CID}.scope`), {
    podUid: UID,
    containerId: CID,
    qos: 'burstable',
    runtime: 'docker',
  });
  assert.deepEqual(parseKubepodsCgroup(`/meshprobe-test-42-2/kubepods/besteffort/pod${UID}/${CID}`), {
    podUid: UID,
    containerId: CID,
    qos: 'besteffort',
  });
  assert.deepEqual(parseKubepodsCgroup(`/kubelet/kubepods/pod${UID}/${CID}`), {
    podUid: UID,
    containerId: CID,
    qos: 'guaranteed',
  });
  assert.deepEqual(
    parseKubepodsCgroup(`/system.slice/containerd.service/kubepods-burstable-pod${UID_}.slice:cri-containerd:${CID}`),
    { podUid: UID, containerId: CID, qos: 'burstable', runtime: 'containerd' },
    'containerd with the systemd path and runc without the systemd driver',
  );
  assert.deepEqual(parseKubepodsCgroup(`/system.slice/crio.service/kubepods-pod${UID_}.slice:crio:${CID}`), {
    podUid: UID,
    containerId: CID,
    qos: 'guaranteed',
    runtime: 'cri-o',
  });
});

test('the pod itself (sandbox), CRI-O conmon, cgroups below a container, static pods', () => {
  for (const qos of QOS) {
    assert.deepEqual(parseKubepodsCgroup(systemdPod(qos)), { podUid: UID, qos }, 'the pause process: no container');
    assert.deepEqual(parseKubepodsCgroup(cgroupfsPod(qos)), { podUid: UID, qos });
    assert.deepEqual(parseKubepodsCgroup(`${systemdPod(qos)}/`), { podUid: UID, qos }, 'a trailing slash');
  }
  assert.deepEqual(parseKubepodsCgroup(`${systemdPod('burstable')}/crio-conmon-${CID}.scope`), {
    podUid: UID,
    qos: 'burstable',
    runtime: 'cri-o',
  });
  assert.deepEqual(parseKubepodsCgroup(`${cgroupfsPod('burstable')}/crio-conmon-${CID}`), {
    podUid: UID,
    qos: 'burstable',
    runtime: 'cri-o',
  });
  assert.deepEqual(
    parseKubepodsCgroup(`${systemdPod('burstable')}/crio-${CID}`),
    { podUid: UID, containerId: CID, qos: 'burstable', runtime: 'cri-o' },
    "CRI-O's sandbox cgroup without a scope",
  );
  assert.deepEqual(
    parseKubepodsCgroup(`${systemdPod('besteffort')}/cri-containerd-${CID}.scope/init.scope`),
    { podUid: UID, containerId: CID, qos: 'besteffort', runtime: 'containerd' },
    'a container that makes its own cgroups',
  );
  assert.deepEqual(parseKubepodsCgroup(`${cgroupfsPod('guaranteed')}/${CID}/sub/deeper`), {
    podUid: UID,
    containerId: CID,
    qos: 'guaranteed',
  });
  assert.deepEqual(parseKubepodsCgroup(`${systemdPod('burstable', 'kubepods', STATIC_UID)}/docker-${CID}.scope`), {
    podUid: STATIC_UID,
    containerId: CID,
    qos: 'burstable',
    runtime: 'docker',
  });
  assert.deepEqual(parseKubepodsCgroup(`${cgroupfsPod('besteffort', STATIC_UID)}/${CID}`), {
    podUid: STATIC_UID,
    containerId: CID,
    qos: 'besteffort',
  });
});

test('host cgroups and malformed names: no pod', () => {
  for (const p of [
    '/',
    '',
    '/init.scope',
    '/system.slice/sshd.service',
    '/user.slice/user-0.slice/session-3.scope',
    `/system.slice/docker-${CID}.scope`, // a docker container, not a pod
    '/kubepods.slice',
    '/kubepods.slice/kubepods-burstable.slice',
    '/kubepods/burstable',
    `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID}.slice/docker-${CID}.scope`, // dashes
    `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_.slice(1)}.slice`, // short UID
    `/kubepods.slice/kubepods-besteffort.slice/kubepods-burstable-pod${UID_}.slice`, // parent of another class
    `/kubepods-burstable-pod${UID_}.slice/docker-${CID}.scope`, // no parent slices
    `/kubepods.slice/kubepods-guaranteed.slice/kubepods-guaranteed-pod${UID_}.slice`, // no such class slice
    `/kubepods.slice/kubepods-pod${UID_.toUpperCase()}.slice`,
    `/kubepods/burstable/pod${UID_}/${CID}`, // underscores in a cgroupfs name
    `/other/burstable/pod${UID}/${CID}`, // not under kubepods
    `/pod${UID}/${CID}`,
    `/kubepods/guaranteed/pod${UID}/${CID}`,
    `/system.slice/containerd.service/kubepods-burstable-pod${UID_}.slice:runc:${CID}`, // unknown prefix
    `/system.slice/containerd.service/notkube-pod${UID_}.slice:cri-containerd:${CID}`,
  ]) {
    assert.equal(parseKubepodsCgroup(p), undefined, p);
  }
  // a malformed container segment leaves the pod known, the container not
  for (const c of [`docker-${CID.slice(2)}.scope`, `cri-containerd-${CID}`, 'foo', `${CID}.scope`, CID.toUpperCase()]) {
    assert.deepEqual(parseKubepodsCgroup(`${systemdPod('burstable')}/${c}`), { podUid: UID, qos: 'burstable' }, c);
  }
});

test('podServiceName and sidecarContainer', () => {
  assert.equal(podServiceName({ namespace: 'shop', pod: 'cart-7d9f-x2' }), 'shop/cart-7d9f-x2');
  for (const s of ['istio-proxy', 'linkerd-proxy', 'cilium-envoy']) assert.equal(sidecarContainer(s), true, s);
  for (const s of ['app', 'istio-init', 'proxy', '', undefined]) assert.equal(sidecarContainer(s), false, String(s));
});

/** A fake kubelet log tree: /var/log/pods-like and /var/log/containers-like directories. */
function kubeletDirs(t: TestContext) {
  const base = mkdtempSync(path.join(tmpdir(), 'meshprobe-k8s-'));
  t.after(() => {
    rmSync(base, { recursive: true, force: true });
  });
  const podsDir = path.join(base, 'pods');
  const containersDir = path.join(base, 'containers');
  mkdirSync(podsDir);
  mkdirSync(containersDir);
  const podDir = (ns: string, pod: string, uid: string) => path.join(podsDir, `${ns}_${pod}_${uid}`);
  return {
    podsDir,
    containersDir,
    addPod(ns: string, pod: string, uid: string, containers: [name: string, id?: string][]) {
      for (const [name, id] of containers) {
        mkdirSync(path.join(podDir(ns, pod, uid), name), { recursive: true });
        writeFileSync(path.join(podDir(ns, pod, uid), name, '0.log'), '');
        if (id !== undefined)
          symlinkSync(
            path.join(podDir(ns, pod, uid), name, '0.log'),
            path.join(containersDir, `${pod}_${ns}_${name}-${id}.log`),
          );
      }
    },
    removePod(ns: string, pod: string, uid: string, ids: string[]) {
      rmSync(podDir(ns, pod, uid), { recursive: true });
      for (const f of ids) rmSync(path.join(containersDir, f), { force: true });
    },
  };
}

class Clock {
  ms = 1_000_000;
  readonly now = () => this.ms;
}

test('names from the pod and container log directories; host cgroups and unknown pods have none', (t) => {
  const d = kubeletDirs(t);
  d.addPod('shop', 'cart-0', UID, [
    ['app', CID],
    ['istio-proxy', CID2],
  ]);
  const id = new K8sIdentity({ podsDir: d.podsDir, containersDir: d.containersDir, cgroupRoot: '/sys/fs/cgroup' });
  assert.deepEqual(id.ofCgroupPath(`${systemdPod('burstable')}/cri-containerd-${CID}.scope`), {
    namespace: 'shop',
    pod: 'cart-0',
    container: 'app',
    podUid: UID,
    containerId: CID,
  });
  assert.deepEqual(id.ofCgroupPath(`/sys/fs/cgroup${cgroupfsPod('besteffort')}/${CID2}`), {
    namespace: 'shop',
    pod: 'cart-0',
    container: 'istio-proxy',
    podUid: UID,
    containerId: CID2,
  });
  assert.deepEqual(
    id.ofCgroupPath(systemdPod('guaranteed')),
    { namespace: 'shop', pod: 'cart-0', podUid: UID },
    'the sandbox: the pod, no container',
  );
  assert.deepEqual(
    id.ofCgroupPath(`${systemdPod('burstable')}/crio-${'ef'.repeat(32)}.scope`),
    { namespace: 'shop', pod: 'cart-0', podUid: UID, containerId: 'ef'.repeat(32) },
    'an unknown ID in a pod of two containers: no container name',
  );
  assert.equal(id.ofCgroupPath('/system.slice/sshd.service'), undefined);
  assert.equal(id.ofCgroupPath(`/kubepods/pod${'9'.repeat(32)}/${CID}`), undefined, 'a pod this node does not list');
});

test('one container directory: its name for an ID not (yet) in the containers directory', (t) => {
  const d = kubeletDirs(t);
  const uid = '7d3c1a2e-2222-4c3b-9a53-2f1f6f5e0002';
  d.addPod('web', 'nginx-abc12', uid, [['nginx']]);
  const id = new K8sIdentity({ podsDir: d.podsDir, containersDir: d.containersDir });
  assert.deepEqual(id.ofCgroupPath(`/kubepods/burstable/pod${uid}/${CID}`), {
    namespace: 'web',
    pod: 'nginx-abc12',
    container: 'nginx',
    podUid: uid,
    containerId: CID,
  });
});

test('the symlink target names the container when the link name was shortened; plain files by their name', (t) => {
  const d = kubeletDirs(t);
  d.addPod('shop', 'cart-0', UID, [['application-server']]);
  // legacyLogSymlink cuts "<pod>_<namespace>_<container>" to fit 255 bytes: here to "app"
  symlinkSync(
    path.join(d.podsDir, `shop_cart-0_${UID}`, 'application-server', '0.log'),
    path.join(d.containersDir, `cart-0_shop_app-${CID}.log`),
  );
  writeFileSync(path.join(d.containersDir, `cart-0_shop_sidecar-${CID2}.log`), '');
  const id = new K8sIdentity({ podsDir: d.podsDir, containersDir: d.containersDir });
  assert.equal(id.ofCgroupPath(`${cgroupfsPod('burstable')}/${CID}`)?.container, 'application-server');
  assert.equal(id.ofCgroupPath(`${cgroupfsPod('burstable')}/${CID2}`)?.container, 'sidecar');
});

test('malformed directory and link names are ignored', (t) => {
  const d = kubeletDirs(t);
  for (const bad of [
    `Shop_cart-0_${UID}`, // upper case
    `shop_cart-0_${UID.slice(1)}`,
    'shop_cart-0',
    `shop_cart_0_${UID}`, // "_" in the pod name
    `-shop_cart-0_${UID}`,
    `shop__${UID}`,
  ]) {
    mkdirSync(path.join(d.podsDir, bad, 'app'), { recursive: true });
  }
  for (const bad of [
    `cart-0_shop_app-${CID.slice(1)}.log`,
    `cart-0_shop_app-${CID}.txt`,
    `cart-0_shop-${CID}.log`,
    `cart-0_shop_App-${CID}.log`,
    'README',
  ]) {
    writeFileSync(path.join(d.containersDir, bad), '');
  }
  const id = new K8sIdentity({ podsDir: d.podsDir, containersDir: d.containersDir });
  assert.equal(id.ofCgroupPath(`${cgroupfsPod('burstable')}/${CID}`), undefined, 'no pod of that UID');
  d.addPod('shop', 'cart-0', UID, [
    ['app', undefined],
    ['db', undefined],
  ]);
  const c = new K8sIdentity({ podsDir: d.podsDir, containersDir: d.containersDir });
  assert.deepEqual(
    c.ofCgroupPath(`${cgroupfsPod('burstable')}/${CID}`),
    { namespace: 'shop', pod: 'cart-0', podUid: UID, containerId: CID },
    'the pod, and no container from the malformed links',
  );
});

test('cgroup ids: cached, host cgroups too; a new pod found on the next listing (at most once per second)', (t) => {
  const d = kubeletDirs(t);
  const clock = new Clock();
  const paths = new Map<bigint, string>([
    [1n, '/system.slice/sshd.service'],
    [2n, `${systemdPod('besteffort')}/cri-containerd-${CID}.scope`],
  ]);
  let lookups = 0;
  const id = new K8sIdentity({
    podsDir: d.podsDir,
    containersDir: d.containersDir,
    now: clock.now,
    pathOf: (n) => {
      lookups++;
      return paths.get(n);
    },
  });
  assert.equal(id.ofCgroupId(1n), undefined);
  assert.equal(id.ofCgroupId(1n), undefined);
  assert.equal(lookups, 1, 'a host cgroup: its path looked up once');
  assert.equal(id.refreshes, 0, 'a host cgroup lists nothing');

  assert.equal(id.ofCgroupId(2n), undefined, 'the pod is not listed yet');
  assert.equal(id.refreshes, 1);
  d.addPod('shop', 'cart-0', UID, [['app', CID]]);
  clock.ms += 999;
  assert.equal(id.ofCgroupId(2n), undefined, 'listed less than a second ago: not again');
  assert.equal(id.refreshes, 1);
  clock.ms += 1;
  const want = { namespace: 'shop', pod: 'cart-0', container: 'app', podUid: UID, containerId: CID };
  assert.deepEqual(id.ofCgroupId(2n), want);
  assert.equal(id.refreshes, 2);
  assert.equal(id.lastSeen(UID), clock.ms);
  const before = lookups;
  clock.ms += 5000;
  assert.deepEqual(id.ofCgroupId(2n), want);
  assert.equal(lookups, before, 'cached by cgroup id');
  assert.equal(id.refreshes, 2, 'a hit lists nothing');
  assert.equal(id.ofCgroupId(3n), undefined, 'an id the walk does not know');
  paths.set(3n, `${systemdPod('besteffort')}/cri-containerd-${CID}.scope`);
  assert.deepEqual(id.ofCgroupId(3n), want, 'not cached as missing: found once the walk knows it');
});

test('a pod whose log directory is gone: named during the grace period, then forgotten', (t) => {
  const d = kubeletDirs(t);
  const clock = new Clock();
  const other = '7d3c1a2e-2222-4c3b-9a53-2f1f6f5e0002';
  d.addPod('shop', 'cart-0', UID, [['app', CID]]);
  d.addPod('shop', 'db-0', other, [['postgres', CID2]]);
  const paths = new Map<bigint, string>([
    [10n, `${cgroupfsPod('burstable')}/${CID}`],
    [11n, `${cgroupfsPod('besteffort', other)}/${CID2}`],
  ]);
  const id = new K8sIdentity({
    podsDir: d.podsDir,
    containersDir: d.containersDir,
    now: clock.now,
    graceMs: 30_000,
    pathOf: (n) => paths.get(n),
  });
  assert.equal(id.ofCgroupId(10n)?.pod, 'cart-0');
  assert.equal(id.ofCgroupId(11n)?.pod, 'db-0');
  assert.deepEqual(id.forget(), [], 'nothing gone');
  assert.deepEqual(id.gonePods(), []);

  d.removePod('shop', 'cart-0', UID, [`cart-0_shop_app-${CID}.log`]);
  clock.ms += 1000;
  const goneAt = clock.ms;
  assert.deepEqual(id.forget(), [], 'gone, but within the grace period');
  assert.deepEqual(id.gonePods(), [{ namespace: 'shop', pod: 'cart-0', podUid: UID, goneAt }]);
  assert.equal(id.ofCgroupId(10n)?.container, 'app', 'still named during the grace period');
  assert.equal(id.lastSeen(UID), goneAt - 1000);

  clock.ms += 29_999;
  assert.deepEqual(id.forget(), []);
  clock.ms += 1;
  assert.deepEqual(id.forget(), [{ namespace: 'shop', pod: 'cart-0', podUid: UID, goneAt }]);
  assert.deepEqual(id.gonePods(), []);
  assert.equal(id.lastSeen(UID), undefined);
  assert.equal(id.ofCgroupId(10n), undefined, 'forgotten');
  assert.equal(id.ofCgroupId(11n)?.container, 'postgres', 'the other pod stays');
  assert.deepEqual(id.forget(0), []);

  // a pod that comes back (same UID) before the grace period ends is not gone
  d.removePod('shop', 'db-0', other, []);
  clock.ms += 1000;
  id.refresh();
  assert.equal(id.gonePods().length, 1);
  d.addPod('shop', 'db-0', other, [['postgres']]);
  clock.ms += 1000;
  id.refresh();
  assert.deepEqual(id.gonePods(), []);
  clock.ms += 60_000;
  assert.deepEqual(id.forget(), []);
  assert.equal(id.ofCgroupId(11n)?.container, 'postgres');
});

test('directories: MESHPROBE_PODS_DIR and MESHPROBE_CONTAINERS_DIR; missing ones are empty, unreadable ones an error', (t) => {
  const d = kubeletDirs(t);
  d.addPod('shop', 'cart-0', UID, [['app', CID]]);
  const saved = { pods: process.env.MESHPROBE_PODS_DIR, containers: process.env.MESHPROBE_CONTAINERS_DIR };
  const restore = () => {
    if (saved.pods === undefined) delete process.env.MESHPROBE_PODS_DIR;
    else process.env.MESHPROBE_PODS_DIR = saved.pods;
    if (saved.containers === undefined) delete process.env.MESHPROBE_CONTAINERS_DIR;
    else process.env.MESHPROBE_CONTAINERS_DIR = saved.containers;
  };
  t.after(restore);
  process.env.MESHPROBE_PODS_DIR = d.podsDir;
  process.env.MESHPROBE_CONTAINERS_DIR = d.containersDir;
  const fromEnv = new K8sIdentity();
  assert.equal(fromEnv.podsDir, d.podsDir);
  assert.equal(fromEnv.containersDir, d.containersDir);
  assert.equal(fromEnv.ofCgroupPath(`${cgroupfsPod('burstable')}/${CID}`)?.container, 'app');
  delete process.env.MESHPROBE_PODS_DIR;
  delete process.env.MESHPROBE_CONTAINERS_DIR;
  const defaults = new K8sIdentity();
  assert.equal(defaults.podsDir, '/var/log/pods');
  assert.equal(defaults.containersDir, '/var/log/containers');

  const none = new K8sIdentity({ podsDir: path.join(d.podsDir, 'nowhere'), containersDir: '/nonexistent' });
  assert.equal(none.ofCgroupPath(`${cgroupfsPod('burstable')}/${CID}`), undefined, 'no kubelet here');
  const loop = path.join(path.dirname(d.podsDir), 'loop');
  symlinkSync(loop, loop);
  const bad = new K8sIdentity({ podsDir: loop, containersDir: d.containersDir });
  assert.throws(
    () => bad.ofCgroupPath(`${cgroupfsPod('burstable')}/${CID}`),
    (e: unknown) => e instanceof MeshprobeError && e.code === 'MP_K8S_DIR' && e.message.includes('ELOOP'),
  );
});
