// analyzeOverhead() on connection tables made by hand: the pairing rules and
// the arithmetic, where the real topology test cannot reach (dual-stack
// sockets, one loopback tuple in two namespaces, clients on other hosts, a
// proxy's own control-plane connection, iptables-redirected ends).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { analyzeOverhead, plainAddr } from '../src/report/overhead.js';
import type { ConnSlot } from '../src/wasm.js';
import { connSlot } from './helpers/conn-slot.js';

/** one socket: role, process, netns, local and remote "addr:port", requests and mean (ms) */
const sock = (
  role: 'c' | 's',
  comm: string,
  tgid: number,
  netns: number,
  local: string,
  remote: string,
  count: number,
  meanMs: number,
): ConnSlot => connSlot({ role, comm, tgid, netns, local, remote, count, meanMs });
const run = (conns: ConnSlot[]) =>
  analyzeOverhead({
    conns,
    proxyComms: ['envoy', 'haproxy'],
    commOf: (c) => c.comm,
    serviceOf: (c) => `${c.comm}:${c.lport}`,
  });

test('plainAddr writes IPv4-mapped addresses as IPv4', () => {
  assert.equal(plainAddr('::ffff:7f00:1'), '127.0.0.1');
  assert.equal(plainAddr('::ffff:a00:20f'), '10.0.2.15');
  assert.equal(plainAddr('::ffff:10.0.2.15'), '10.0.2.15');
  assert.equal(plainAddr('fd00::1'), 'fd00::1');
});

test('client -> envoy -> envoy -> app: the parts are the means, the mesh is each proxy downstream minus upstream', () => {
  const r = run([
    sock('c', 'curl', 10, 1, '127.0.0.1:40000', '127.0.0.1:15001', 100, 5.0),
    sock('s', 'envoy', 11, 1, '127.0.0.1:15001', '127.0.0.1:40000', 100, 4.8),
    sock('c', 'envoy', 11, 1, '10.0.0.1:41000', '10.0.0.2:15006', 100, 4.5),
    sock('s', 'envoy', 12, 2, '10.0.0.2:15006', '10.0.0.1:41000', 100, 4.3),
    sock('c', 'envoy', 12, 2, '127.0.0.1:42000', '127.0.0.1:8080', 100, 4.1),
    sock('s', 'app', 13, 2, '127.0.0.1:8080', '127.0.0.1:42000', 100, 4.0),
  ]);
  const s = r.by_service[0];
  assert.deepEqual(s.path, ['11:envoy', '12:envoy']);
  assert.equal(s.total_ms, 5);
  assert.equal(s.application_ms, 4);
  assert.equal(s.mesh_processing_ms, 0.5); // (4.8 - 4.5) + (4.3 - 4.1)
  assert.equal(s.kernel_processing_ms, 0.5);
  assert.equal(r.requests_unpaired, 0);
});

test('a dual-stack server ([::] listener) pairs with its IPv4 client', () => {
  const r = run([
    sock('c', 'curl', 10, 1, '127.0.0.1:40000', '127.0.0.1:8080', 10, 2),
    sock('s', 'app', 13, 1, '::ffff:7f00:1:8080', '::ffff:7f00:1:40000', 10, 1.5),
  ]);
  assert.equal(r.requests_unpaired, 0);
  assert.equal(r.by_service.length, 1);
  assert.equal(r.by_service[0].clients_seen, true);
  assert.equal(r.by_service[0].kernel_processing_ms, 0.5);
});

test('the same loopback tuple in two network namespaces pairs within each', () => {
  const r = run([
    sock('c', 'curl', 10, 1, '127.0.0.1:40000', '127.0.0.1:8080', 10, 2),
    sock('s', 'fast', 13, 1, '127.0.0.1:8080', '127.0.0.1:40000', 10, 1),
    sock('c', 'curl', 20, 2, '127.0.0.1:40000', '127.0.0.1:8080', 10, 6),
    sock('s', 'slow', 23, 2, '127.0.0.1:8080', '127.0.0.1:40000', 10, 5),
  ]);
  const by = Object.fromEntries(r.by_service.map((s) => [s.service, s]));
  assert.equal(by['fast:8080'].total_ms, 2);
  assert.equal(by['fast:8080'].application_ms, 1);
  assert.equal(by['slow:8080'].total_ms, 6);
  assert.equal(by['slow:8080'].application_ms, 5);
});

test('clients on another host: the inbound sidecar and its app, total unknown', () => {
  const r = run([
    sock('s', 'envoy', 12, 2, '10.0.0.2:15006', '10.9.9.9:41000', 50, 3.3),
    sock('c', 'envoy', 12, 2, '127.0.0.1:42000', '127.0.0.1:8080', 50, 3.1),
    sock('s', 'app', 13, 2, '127.0.0.1:8080', '127.0.0.1:42000', 50, 3.0),
  ]);
  const s = r.by_service[0];
  assert.equal(s.clients_seen, false);
  assert.equal(s.total_ms, null);
  assert.equal(s.application_ms, 3);
  assert.equal(s.mesh_processing_ms, 0.2);
  assert.deepEqual(s.path, ['12:envoy']);
  assert.equal(r.mesh_processing_ms, null, 'no complete split overall');
});

test("a proxy's own control-plane stream is not one of its routes", () => {
  const r = run([
    sock('c', 'curl', 10, 1, '127.0.0.1:40000', '127.0.0.1:15001', 100, 2.0),
    sock('s', 'envoy', 11, 1, '127.0.0.1:15001', '127.0.0.1:40000', 100, 1.9),
    sock('c', 'envoy', 11, 1, '127.0.0.1:41000', '127.0.0.1:8080', 100, 1.6),
    sock('c', 'envoy', 11, 1, '10.0.0.1:43000', '10.96.0.10:15012', 3, 30_000), // xDS, off-host
    sock('s', 'app', 13, 1, '127.0.0.1:8080', '127.0.0.1:41000', 100, 1.5),
  ]);
  assert.equal(r.requests_unpaired, 0);
  assert.equal(r.by_service[0].mesh_processing_ms, 0.3);
  assert.equal(r.proxies[0].upstream_requests, 100);
});

test('ends redirected by iptables pair by the client address alone', () => {
  const r = run([
    // the client connected to the server pod's address; REDIRECT sent it to its sidecar on 127.0.0.1:15001
    sock('c', 'curl', 10, 1, '10.0.0.1:40000', '10.0.0.2:8080', 10, 3),
    sock('s', 'envoy', 11, 1, '127.0.0.1:15001', '10.0.0.1:40000', 10, 2.9),
    sock('c', 'envoy', 11, 1, '10.0.0.1:41000', '10.0.0.2:8080', 10, 2.7),
    // PREROUTING REDIRECT in the server pod: to its sidecar's 15006
    sock('s', 'envoy', 12, 2, '10.0.0.2:15006', '10.0.0.1:41000', 10, 2.6),
    sock('c', 'envoy', 12, 2, '127.0.0.1:42000', '127.0.0.1:8080', 10, 2.2),
    sock('s', 'app', 13, 2, '127.0.0.1:8080', '127.0.0.1:42000', 10, 2.0),
  ]);
  assert.equal(r.requests_unpaired, 0);
  assert.deepEqual(r.by_service[0].path, ['11:envoy', '12:envoy']);
  assert.equal(r.by_service[0].mesh_processing_ms, 0.6);
  assert.equal(r.by_service[0].kernel_processing_ms, 0.4);
});

test('a client whose server is elsewhere is unpaired, not split', () => {
  const r = run([sock('c', 'curl', 10, 1, '10.0.0.1:40000', '93.184.216.34:443', 7, 20)]);
  assert.equal(r.requests_unpaired, 7);
  assert.equal(r.by_service.length, 0);
  assert.equal(r.total_ms, 20);
  assert.equal(r.requests, 0);
});
