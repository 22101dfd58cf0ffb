// Headless Chromium for the generate-report tests: find the Debian package's
// binary, run it with a fresh profile and no background networking, take a
// screenshot or dump the DOM, and always end it (its whole process group,
// by the PID we started, with a timeout) and remove its profile. Plus a
// small PNG reader (IHDR, IDAT inflate, scanline unfiltering) to check that
// a screenshot is not blank.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { processes } from './proc.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { inflateSync } from 'node:zlib';
import assert from 'node:assert/strict';

const CANDIDATES = ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/lib/chromium/chromium'];

/** The browser binary: $CHROMIUM, else the Debian package's. */
export function findChromium(): string | undefined {
  const env = process.env.CHROMIUM;
  if (env) return existsSync(env) ? env : undefined;
  return CANDIDATES.find((p) => existsSync(p));
}

/** What node:test's TestContext offers to skip. */
interface Skippable {
  skip(message?: string): void;
}

/**
 * The binary, or undefined after skipping the test with the reason. Under
 * CI=true a missing browser is a failure: the charts must be checked there.
 */
export function requireChromium(t: Skippable): string | undefined {
  const bin = findChromium();
  if (bin) return bin;
  const why =
    'chromium is not installed (apt-get install chromium fonts-dejavu-core, or scripts/setup.sh; or set CHROMIUM)';
  if (process.env.CI === 'true') throw new Error(`${why}: under CI this test may not be skipped`);
  t.skip(why);
  return undefined;
}

/** Flags for a headless run that reaches for no network of its own. */
export const HEADLESS_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-default-apps',
  '--disable-extensions',
  '--mute-audio',
  '--hide-scrollbars',
];

export interface ChromiumResult {
  /** the browser's pid, also its process group's id */
  pid: number;
  /** the profile dir it ran with (removed when it ended) */
  profile: string;
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  /** processes of its group still running 5 s after it was killed (none expected) */
  leftover: number[];
}

/** Kills the process group we started (detached: its group id is its pid); a group already gone is fine. */
function killGroup(pid: number | undefined): void {
  if (!pid) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    /* ESRCH: every process of the group has exited */
  }
}

/**
 * The processes of a group still running (from /proc; zombies are not
 * running: they have exited and wait for a parent to reap them, which for
 * orphans is PID 1's job, not ours).
 */
export function liveMembers(pgid: number): number[] {
  return processes()
    .filter((p) => p.pgrp === pgid && p.state !== 'Z' && p.state !== 'X')
    .map((p) => p.pid);
}

export function groupAlive(pgid: number): boolean {
  return liveMembers(pgid).length > 0;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs chromium with HEADLESS_FLAGS, a fresh profile and `args`; ends it after timeoutMs. */
export function runChromium(bin: string, args: string[], timeoutMs = 60_000): Promise<ChromiumResult> {
  const profile = mkdtempSync(join(tmpdir(), 'meshprobe-chromium-'));
  return new Promise((resolve, reject) => {
    const proc = spawn(bin, [...HEADLESS_FLAGS, `--user-data-dir=${profile}`, ...args], {
      detached: true, // its own process group: renderer and zygote included in the kill below
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    proc.stdout.on('data', (b: Buffer) => {
      stdout += b.toString();
    });
    proc.stderr.on('data', (b: Buffer) => {
      stderr += b.toString();
    });
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(proc.pid);
    }, timeoutMs);
    // none when the spawn failed ('error' says why)
    const pid = proc.pid;
    const done = async (): Promise<number[]> => {
      clearTimeout(timer);
      killGroup(pid); // helpers it left behind
      let left = pid ? liveMembers(pid) : [];
      for (let i = 0; pid && i < 250 && left.length; i++) {
        await sleep(20);
        left = liveMembers(pid);
      }
      rmSync(profile, { recursive: true, force: true });
      return left;
    };
    proc.on('error', (e) => {
      void done().then(() => {
        reject(e);
      });
    });
    proc.on('close', (code, signal) => {
      void done().then((leftover) => {
        // no PID: the spawn failed and 'error' has rejected already
        if (pid) resolve({ pid, profile, code, signal, stdout, stderr, timedOut, leftover });
      });
    });
  });
}

/** A screenshot of a local page at the given window size. */
export async function screenshot(
  bin: string,
  htmlFile: string,
  pngFile: string,
  size: { width: number; height: number },
): Promise<ChromiumResult> {
  const r = await runChromium(bin, [
    `--screenshot=${pngFile}`,
    `--window-size=${size.width},${size.height}`,
    pathToFileURL(htmlFile).href,
  ]);
  if (r.timedOut) throw new Error(`chromium did not finish the screenshot in time:\n${r.stderr.slice(-2000)}`);
  if (!existsSync(pngFile))
    throw new Error(`chromium wrote no screenshot (exit ${String(r.code)}):\n${r.stderr.slice(-2000)}`);
  return r;
}

/** The DOM after load, as Chromium serializes it (scripts have run). */
export async function dumpDom(bin: string, htmlFile: string, extra: string[] = []): Promise<ChromiumResult> {
  const r = await runChromium(bin, [...extra, '--dump-dom', pathToFileURL(htmlFile).href]);
  if (r.timedOut) throw new Error(`chromium did not dump the DOM in time:\n${r.stderr.slice(-2000)}`);
  return r;
}

// ------------------------------------------------------------ PNG

export interface Image {
  width: number;
  height: number;
  /** RGBA, 8 bits per channel, row after row */
  rgba: Uint8Array;
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

function paeth(a: number, b: number, c: number): number {
  const p = a + b - c;
  const pa = Math.abs(p - a),
    pb = Math.abs(p - b),
    pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/**
 * Decodes a PNG of 8-bit depth, non-interlaced, colour type 2 (RGB), 6
 * (RGBA), 0 (grey) or 4 (grey + alpha): what Chromium writes. Throws on
 * anything else.
 */
export function decodePng(buf: Buffer): Image {
  if (buf.length < 8 || !buf.subarray(0, 8).equals(PNG_SIGNATURE)) throw new Error('not a PNG (bad signature)');
  let off = 8;
  let width = 0,
    height = 0,
    depth = 0,
    type = 0,
    interlace = 0;
  const idat: Buffer[] = [];
  while (off + 8 <= buf.length) {
    const len = buf.readUInt32BE(off);
    const kind = buf.toString('latin1', off + 4, off + 8);
    const data = buf.subarray(off + 8, off + 8 + len);
    off += 12 + len;
    if (kind === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      depth = data[8];
      type = data[9];
      interlace = data[12];
    } else if (kind === 'IDAT') {
      idat.push(data);
    } else if (kind === 'IEND') {
      break;
    }
  }
  const channels = ({ 0: 1, 2: 3, 4: 2, 6: 4 } as Record<number, number>)[type];
  if (!width || !height || depth !== 8 || !channels || interlace !== 0) {
    throw new Error(`unsupported PNG: ${width}x${height}, depth ${depth}, colour type ${type}, interlace ${interlace}`);
  }
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  if (raw.length < height * (stride + 1))
    throw new Error(`PNG data too short: ${raw.length} < ${height * (stride + 1)}`);
  const out = new Uint8Array(height * stride);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    const row = y * stride;
    const prev = row - stride;
    for (let x = 0; x < stride; x++) {
      const a = x >= channels ? out[row + x - channels] : 0;
      const b = y > 0 ? out[prev + x] : 0;
      const c = x >= channels && y > 0 ? out[prev + x - channels] : 0;
      let v = line[x];
      switch (filter) {
        case 0:
          break;
        case 1:
          v += a;
          break;
        case 2:
          v += b;
          break;
        case 3:
          v += (a + b) >> 1;
          break;
        case 4:
          v += paeth(a, b, c);
          break;
        default:
          throw new Error(`bad PNG filter ${filter} on row ${y}`);
      }
      out[row + x] = v & 0xff;
    }
  }
  const rgba = new Uint8Array(width * height * 4);
  for (let i = 0, j = 0; i < width * height; i++, j += channels) {
    const g = out[j];
    if (channels === 4) rgba.set(out.subarray(j, j + 4), i * 4);
    else if (channels === 3) rgba.set([out[j], out[j + 1], out[j + 2], 255], i * 4);
    else if (channels === 2) rgba.set([g, g, g, out[j + 1]], i * 4);
    else rgba.set([g, g, g, 255], i * 4);
  }
  return { width, height, rgba };
}

export function readPng(file: string): Image {
  return decodePng(readFileSync(file));
}

export interface PixelStats {
  /** the most common colour, taken as the background: [r, g, b] */
  background: [number, number, number];
  /** share of pixels that differ from the background */
  nonBackground: number;
  /** share of pixels that are saturated colour (not white, grey or black): chart ink */
  coloured: number;
  /** pixel counts per exact colour "#rrggbb", for colours covering at least minPixels */
  colours: Map<string, number>;
}

const hex = (r: number, g: number, b: number) => `#${((1 << 24) | (r << 16) | (g << 8) | b).toString(16).slice(1)}`;

/** Counts colours of an image (or of its rows [y0, y1)). */
export function pixelStats(img: Image, opts: { minPixels?: number; y0?: number; y1?: number } = {}): PixelStats {
  const y0 = opts.y0 ?? 0,
    y1 = Math.min(img.height, opts.y1 ?? img.height);
  const counts = new Map<number, number>();
  let coloured = 0;
  for (let y = y0; y < y1; y++) {
    for (let x = 0; x < img.width; x++) {
      const i = (y * img.width + x) * 4;
      const r = img.rgba[i],
        g = img.rgba[i + 1],
        b = img.rgba[i + 2];
      const key = (r << 16) | (g << 8) | b;
      counts.set(key, (counts.get(key) ?? 0) + 1);
      if (Math.max(r, g, b) - Math.min(r, g, b) > 40) coloured++;
    }
  }
  const total = img.width * (y1 - y0);
  let bg = 0,
    bgCount = 0;
  for (const [k, c] of counts)
    if (c > bgCount) {
      bg = k;
      bgCount = c;
    }
  const colours = new Map<string, number>();
  for (const [k, c] of [...counts].sort((a, b) => b[1] - a[1])) {
    if (c < (opts.minPixels ?? 1)) break;
    colours.set(hex(k >> 16, (k >> 8) & 0xff, k & 0xff), c);
  }
  return {
    background: [bg >> 16, (bg >> 8) & 0xff, bg & 0xff],
    nonBackground: total > 0 ? 1 - bgCount / total : 0,
    coloured: total > 0 ? coloured / total : 0,
    colours,
  };
}

/** Pixels near a colour (within `tolerance` on every channel). */
export function countNear(img: Image, colour: string, tolerance = 6): number {
  const r0 = parseInt(colour.slice(1, 3), 16),
    g0 = parseInt(colour.slice(3, 5), 16),
    b0 = parseInt(colour.slice(5, 7), 16);
  let n = 0;
  for (let i = 0; i < img.rgba.length; i += 4) {
    if (
      Math.abs(img.rgba[i] - r0) <= tolerance &&
      Math.abs(img.rgba[i + 1] - g0) <= tolerance &&
      Math.abs(img.rgba[i + 2] - b0) <= tolerance
    )
      n++;
  }
  return n;
}

// ------------------------------------------------------------ network log

/**
 * The URLs the page itself asked for, from a --log-net-log file: requests
 * started with an origin (a file:// page's is "null"). Chromium's own
 * background requests (update checks, time sync) have no origin ("not an
 * origin") and are left out: they are the browser's, not the page's.
 */
export function pageRequests(netlogFile: string): string[] {
  let text = readFileSync(netlogFile, 'utf8').trim();
  let log: {
    constants: { logEventTypes: Record<string, number> };
    events: { type: number; params?: Record<string, unknown> }[];
  };
  try {
    log = JSON.parse(text) as typeof log;
  } catch {
    // a log not closed (the browser was killed): close its event list
    text = text.replace(/,\s*$/, '');
    log = JSON.parse(`${text}]}`) as typeof log;
  }
  const start = log.constants.logEventTypes.URL_REQUEST_START_JOB;
  return log.events.flatMap((e) =>
    e.type === start && e.params && typeof e.params.url === 'string' && e.params.initiator !== 'not an origin'
      ? [e.params.url]
      : [],
  );
}

// ------------------------------------------------------------ the page's charts

// Read from the page's text or from Chromium's serialized DOM alike: every
// <svg class="chart">, its data attributes, and the marks of each series.

export interface ChartEl {
  chart: string;
  /** data-series, split */
  series: string[];
  attrs: Record<string, string>;
  /** per <g class="series">: its key, bar count, drawn path lengths, point count */
  groups: { key: string; bars: number; paths: string[]; points: number }[];
  body: string;
}

const unescape = (s: string) =>
  s
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .replace(/&amp;/g, '&');

function attrsOf(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of s.matchAll(/([\w-]+)="([^"]*)"/g)) out[m[1]] = unescape(m[2]);
  return out;
}

/** Every chart SVG of a page (or of Chromium's serialized DOM). */
export function chartsOf(page: string): ChartEl[] {
  return [...page.matchAll(/<svg class="chart"([^>]*)>([\s\S]*?)<\/svg>/g)].map((m) => {
    const attrs = attrsOf(m[1]);
    const groups = [...m[2].matchAll(/<g class="series([^"]*)"([^>]*)>([\s\S]*?)<\/g>/g)].map((g) => ({
      key: attrsOf(g[2])['data-series'],
      bars: (g[3].match(/<rect class="bar"/g) ?? []).length,
      paths: [...g[3].matchAll(/<path class="line" d="([^"]*)"/g)].map((p) => p[1]),
      points: (g[3].match(/<circle class="point"/g) ?? []).length,
    }));
    return {
      chart: attrs['data-chart'],
      series: attrs['data-series'] ? attrs['data-series'].split(',') : [],
      attrs,
      groups,
      body: m[2],
    };
  });
}

export function chart(page: string, name: string): ChartEl {
  const found = chartsOf(page).filter((c) => c.chart === name);
  assert.equal(found.length, 1, `one ${name} chart (found ${found.length})`);
  return found[0];
}
