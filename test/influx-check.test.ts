// --format influx checks, before anything loads, that the database the points go to exists and
// takes our writes: a run that would drop every point for its whole duration stops at once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { needsRoot, runCli } from './helpers/probe.js';
import { startInfluxdb1 } from './helpers/servers.js';
import { createServer } from 'node:http';
import { checkInfluxReachable, type InfluxOptions } from '../src/export/influx.js';
import { MeshprobeError } from '../src/errors.js';

test('--db that does not exist: one line naming it and how to create it, exit 2, nothing loaded', async (t) => {
  if (!needsRoot(t)) return;
  const ifx = await startInfluxdb1(t);
  await ifx.createDatabase('meshprobe');
  const args = ['--format', 'influx', '--url', ifx.url, '--duration', '1', '--output', '/dev/null'];
  const missing = runCli('latency-probe', [...args, '--db', 'nosuchdb']);
  assert.equal(missing.code, 2, missing.stderr);
  const lines = missing.stderr.trim().split('\n');
  assert.equal(lines.length, 1, missing.stderr);
  assert.match(lines[0], /InfluxDB at http:\/\/127\.0\.0\.1:\d+ has no database "nosuchdb" \(database not found/);
  assert.match(lines[0], /CREATE DATABASE nosuchdb/);
  assert.doesNotMatch(missing.stderr, /measuring/, 'stopped before measuring');
  // the database that exists: the run goes ahead
  const ok = runCli('latency-probe', [...args, '--db', 'meshprobe']);
  assert.equal(ok.code, 0, ok.stderr);
});

/** A server that answers as InfluxDB 2.x does: token, then bucket, then permission, then the body. */
async function fakeInflux2(t: { after(fn: () => unknown): void }): Promise<string> {
  const srv = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const json = (status: number, message: string) => {
      res.writeHead(status, { 'Content-Type': 'application/json' }).end(JSON.stringify({ code: 'x', message }));
    };
    req.resume();
    req.on('end', () => {
      if (url.pathname === '/ping') res.writeHead(204).end();
      else if (req.headers.authorization !== 'Token good') json(401, 'unauthorized access');
      else if (url.searchParams.get('bucket') !== 'mesh')
        json(404, `bucket "${url.searchParams.get('bucket') ?? ''}" not found`);
      else if (url.searchParams.get('org') !== 'acme') json(403, 'insufficient permissions for write');
      else json(400, 'writing requires points');
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.after(() => {
    srv.close();
  });
  const a = srv.address();
  assert.ok(a && typeof a === 'object');
  return `http://127.0.0.1:${String(a.port)}`;
}

test('InfluxDB 2.x order of checks: refused token and permission (MP_INFLUX_AUTH), missing bucket (MP_INFLUX_NO_DB), and the 400 of an empty body is a pass', async (t) => {
  const url = await fakeInflux2(t);
  const check = (o: Partial<InfluxOptions>) =>
    checkInfluxReachable({ url, org: 'acme', bucket: 'mesh', token: 'good', ...o });
  await check({}); // "writing requires points": token, bucket and permission accepted
  const code = async (o: Partial<InfluxOptions>) => {
    try {
      await check(o);
      return 'passed';
    } catch (e) {
      assert.ok(e instanceof MeshprobeError, String(e));
      assert.equal(e.exitCode, 2);
      return `${e.code}: ${e.message}`;
    }
  };
  assert.match(await code({ token: 'bad' }), /^MP_INFLUX_AUTH: .*HTTP 401: unauthorized access.*check --token/);
  assert.match(
    await code({ bucket: 'nope' }),
    /^MP_INFLUX_NO_DB: .*no bucket "nope" of org "acme" \(bucket "nope" not found\)/,
  );
  assert.match(await code({ org: 'other' }), /^MP_INFLUX_AUTH: .*HTTP 403/);
});
