// generate-report in a real browser: headless Chromium (the Debian package)
// opens the page from file:// with no network, takes a screenshot and
// serializes the DOM. The screenshot must not be blank (read with our own
// PNG decoder: ink on a good share of it, the charts' colours present), the
// DOM must hold every chart with as many drawn marks per series as the
// inputs give, and the page must ask for nothing over the network (from
// Chromium's own network log, checked against a page that does). Outside CI
// a missing browser skips; under CI=true it fails.
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { REPO_ROOT } from '../src/paths.js';
import { VIEW_COLOR, OVERHEAD_COLOR, SERIES } from '../src/html/palette.js';
import {
  chartsOf,
  countNear,
  dumpDom,
  pageRequests,
  pixelStats,
  readPng,
  requireChromium,
  screenshot,
} from './helpers/chromium.js';

const FIXTURES = path.join(REPO_ROOT, 'test', 'fixtures', 'report');
const CLI = path.join(REPO_ROOT, 'dist', 'src', 'cli', 'generate-report.js');

const dir = mkdtempSync(path.join(tmpdir(), 'meshprobe-report-browser-'));
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** The page of all four inputs (latency as a json-stream: time series too), written by the command. */
function makePage(): string {
  const out = path.join(dir, 'report.html');
  const r = spawnSync(
    process.execPath,
    [
      CLI,
      '--include-ebpf-metrics',
      path.join(FIXTURES, 'latency-stream.ndjson'),
      '--connections',
      path.join(FIXTURES, 'connections.json'),
      '--drops',
      path.join(FIXTURES, 'drops.json'),
      '--compare',
      path.join(FIXTURES, 'analysis.json'),
      '--output',
      out,
      '--quiet',
    ],
    { encoding: 'utf8' },
  );
  assert.equal(r.status, 0, r.stderr);
  return out;
}

const SIZE = { width: 1280, height: 4000 };

describe('generate-report in headless Chromium', () => {
  const page = makePage();
  const source = readFileSync(page, 'utf8');

  test("the screenshot is not blank: ink, and the charts' colours", async (t) => {
    const bin = requireChromium(t);
    if (!bin) return;
    const png = path.join(dir, 'report.png');
    const run = await screenshot(bin, page, png, SIZE);
    assert.deepEqual(run.leftover, [], 'every Chromium process has exited');
    assert.ok(!existsSync(run.profile), 'its profile is removed');
    const img = readPng(png);
    assert.equal(img.width, SIZE.width);
    assert.equal(img.height, SIZE.height);
    const s = pixelStats(img, { minPixels: 50 });
    assert.deepEqual(s.background, [255, 255, 255], 'a white page');
    assert.ok(s.nonBackground > 0.12, `ink on ${(s.nonBackground * 100).toFixed(1)} % of the page`);
    assert.ok(s.coloured > 0.02, `colour on ${(s.coloured * 100).toFixed(1)} % of the page`);
    // the views' lines and bars, the overhead parts, the drop/failure red: each drawn somewhere
    const wanted: Record<string, string> = {
      'client view': VIEW_COLOR.client,
      'server view': VIEW_COLOR.server,
      'network view': VIEW_COLOR.network,
      'kernel part': OVERHEAD_COLOR.kernel,
      'failures and drops': SERIES[3],
    };
    for (const [what, colour] of Object.entries(wanted)) {
      const n = countNear(img, colour, 8);
      assert.ok(n > 300, `${what} (${colour}): ${n} pixels`);
    }
    // every part of the first screen has something: no chart area left empty
    for (let y = 0; y + 500 <= img.height; y += 500) {
      const band = pixelStats(img, { y0: y, y1: y + 500 });
      assert.ok(band.nonBackground > 0.03, `rows ${y}-${y + 500}: ${(band.nonBackground * 100).toFixed(1)} % ink`);
    }
  });

  test('the check would see a blank page', async (t) => {
    const bin = requireChromium(t);
    if (!bin) return;
    const blank = path.join(dir, 'blank.html');
    writeFileSync(blank, '<!DOCTYPE html><html><body style="background:#fff"></body></html>');
    const png = path.join(dir, 'blank.png');
    await screenshot(bin, blank, png, { width: 400, height: 300 });
    const s = pixelStats(readPng(png));
    assert.ok(s.nonBackground < 0.001 && s.coloured === 0, `blank: ${s.nonBackground}`);
  });

  test('the DOM holds every chart with its series drawn, and the page asked for nothing', async (t) => {
    const bin = requireChromium(t);
    if (!bin) return;
    const netlog = path.join(dir, 'netlog.json');
    const run = await dumpDom(bin, page, [`--log-net-log=${netlog}`]);
    assert.equal(run.code, 0, run.stderr.slice(-2000));
    assert.deepEqual(run.leftover, [], 'every Chromium process has exited');
    const dom = run.stdout;
    assert.match(dom, /<h1>meshprobe report · vm<\/h1>/);
    const inDom = chartsOf(dom);
    const inFile = chartsOf(source);
    const expected = [
      'latency-cdf',
      'latency-histogram',
      'service-cdf',
      'service-histogram',
      'overhead-breakdown',
      'overhead-added',
      'connection-timing',
      'connection-lifecycle',
      'connection-failures',
      'tls-versions',
      'connection-setup-by-service',
      'connections-by-service',
      'drops-by-reason',
      'drops-by-layer',
      'drops-by-service',
      'compare',
      'compare',
      'latency-timeseries',
      'request-rate',
    ];
    assert.deepEqual(inDom.map((c) => c.chart).sort(), [...expected].sort(), 'the charts the four inputs call for');
    assert.equal(inDom.length, inFile.length);
    for (const [i, c] of inDom.entries()) {
      const f = inFile[i];
      assert.equal(c.chart, f.chart);
      assert.deepEqual(c.series, f.series, `${c.chart}: series`);
      assert.deepEqual(
        c.groups.map((g) => [g.key, g.bars, g.points, g.paths.length]),
        f.groups.map((g) => [g.key, g.bars, g.points, g.paths.length]),
        `${c.chart}: marks per series`,
      );
      for (const g of c.groups)
        for (const d of g.paths) assert.match(d, /^M[\d.]+,[\d.]+[LHV]/, `${c.chart} ${g.key}: a path with segments`);
    }
    // the CDF: one line per view, each with many points; the latency axis is log
    const cdf = inDom.find((c) => c.chart === 'latency-cdf');
    assert.ok(cdf, 'the latency CDF chart');
    assert.deepEqual(cdf.series, ['client', 'server', 'network']);
    assert.equal(cdf.attrs['data-x-scale'], 'log');
    assert.ok(cdf.groups.every((g) => g.paths[0].split(/[ML]/).length > 20));
    assert.deepEqual(pageRequests(netlog), [], 'no request from the page');
  });

  test('the network check sees a page that loads something', async (t) => {
    const bin = requireChromium(t);
    if (!bin) return;
    const bad = path.join(dir, 'loads.html');
    // port 9 (discard) on loopback: refused at once, but asked for
    writeFileSync(bad, '<!DOCTYPE html><html><body><img src="http://127.0.0.1:9/x.png"></body></html>');
    const netlog = path.join(dir, 'netlog-bad.json');
    await dumpDom(bin, bad, [`--log-net-log=${netlog}`]);
    assert.deepEqual(pageRequests(netlog), ['http://127.0.0.1:9/x.png']);
  });

  test('the page file has no reference to anything outside it', () => {
    assert.doesNotMatch(source, /\b(src|href)\s*=\s*"(?!#)/i);
    assert.doesNotMatch(source, /https?:\/\//i);
  });
});
