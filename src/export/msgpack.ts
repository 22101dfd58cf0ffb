/**
 * --format msgpack: the content of --format json-stream (one object per
 * aggregation interval, then the summary) as MessagePack records, written and
 * flushed record by record like the stream's lines, so a run killed mid-way
 * leaves a readable prefix.
 *
 * The file: the msgpack string "meshprobe-records/2" (the header: 20 bytes,
 * 0xb3 then the ASCII text; no JSON text can start with byte 0xb3, so a
 * reader tells the formats apart by content), then one msgpack value per
 * record, encoded by msgpackr's Packr with structured records in sequential
 * mode: an object's key list is defined inline the first time its shape
 * appears (msgpackr's record extension, type 0x72) and later objects of that
 * shape refer to it by a one-byte id, across records. A record can therefore
 * only be read after those before it: the file is read from the start
 * (src/input.ts, readRecords).
 *
 * Histogram bucket lists, ~92 % of a json-stream with many services, are
 * written compactly (version 2): an array of [lower_ns, upper_ns, count]
 * triples whose bounds are exactly those of buckets of the log-linear
 * histogram (src/histogram.ts), in strictly ascending bucket order, with
 * counts that are integers in [0, 2^53), is the msgpack extension type 0x68
 * (BUCKETS_EXT) whose data is unsigned LEB128 varints: the histogram's
 * bucket count (1985: the layout the indexes refer to; a reader with another
 * layout refuses the file), the number of triples, then for each triple the
 * gap to the previous bucket's index (index - previous - 1, the first from
 * -1) and the count. The reader turns it back into the same triples
 * (bucketLower/bucketUpper of each index). Any other array (empty, or one
 * bound that is not its bucket's exact value, a fractional count, ...) is
 * written as plain msgpack, so nothing depends on a list being recognised.
 * The extension is registered with msgpackr's addExtension, which is global
 * to the process: any Unpackr then reads type 0x68 this way. Version 1 files
 * (header "meshprobe-records/1", no extension) read the same way.
 *
 * Each record holds exactly what the json-stream line would: the object is
 * taken through JSON first (Dates as ISO strings, undefined fields left out,
 * NaN/Infinity as null, toJSON honoured; the reports hold no bigints: 64-bit
 * keys are strings), so a record decodes to the object JSON.parse gives for
 * the line, key order included, and converting back to NDJSON
 * (`generate-report --to-ndjson`) gives the json-stream's bytes.
 */
import { Packr, addExtension } from 'msgpackr';
import { JsonStream } from './stream.js';
import { bucketCount, bucketLower, bucketUpper } from '../histogram.js';

/** The header: the first value of every file, a msgpack string. */
export const RECORDS_MAGIC = 'meshprobe-records/2';
/** The header of the first version (bucket lists as plain arrays), still read. */
export const RECORDS_MAGIC_V1 = 'meshprobe-records/1';

const headerOf = (magic: string) => Buffer.concat([Buffer.from([0xa0 | magic.length]), Buffer.from(magic, 'latin1')]);

/** The header as bytes: fixstr (0xa0 | length), then the text. */
export const RECORDS_HEADER: Buffer = headerOf(RECORDS_MAGIC);
/** Version 1's header: the same length, only the last byte differs. */
export const RECORDS_HEADER_V1: Buffer = headerOf(RECORDS_MAGIC_V1);

/** The options both sides use: records defined inline, in order (msgpackr's sequential mode). */
export const RECORD_OPTIONS = { useRecords: true, sequential: true } as const;

/** The msgpack extension type of a compact bucket list ('h'; msgpackr's own types are others). */
export const BUCKETS_EXT = 0x68;

/** One bucket of a report's bucket list: [lower_ns, upper_ns (exclusive), count]. */
type Triple = [number, number, number];

interface Layout {
  /** the histogram's bucket count: written in each list, checked on reading */
  nb: number;
  lower: number[];
  upper: number[];
  /** lower bound -> bucket index */
  index: Map<number, number>;
}

let layout: Layout | undefined;
function histogramLayout(): Layout {
  if (!layout) {
    const nb = bucketCount();
    const lower: number[] = [];
    const upper: number[] = [];
    const index = new Map<number, number>();
    // as small integers where they are (the arrays the reader builds then hold no boxed numbers)
    const small = (v: number) => (v <= 0x3fffffff ? v | 0 : v);
    for (let i = 0; i < nb; i++) {
      lower.push(small(bucketLower(i)));
      upper.push(small(bucketUpper(i)));
      index.set(bucketLower(i), i);
    }
    layout = { nb, lower, upper, index };
  }
  return layout;
}

/** A bucket list on its way to the packer: its extension data. */
class PackedBuckets {
  constructor(readonly data: Uint8Array) {}
}

/** Unsigned LEB128 of a safe integer >= 0 at `pos`; the next position. */
function putVarint(buf: Uint8Array, pos: number, v: number): number {
  while (v >= 0x80) {
    buf[pos++] = (v % 0x80) | 0x80;
    v = Math.floor(v / 0x80);
  }
  buf[pos++] = v;
  return pos;
}

let scratch = new Uint8Array(1 << 16);

/**
 * The extension data of `list` when it is a bucket list that decodes back
 * exactly (see the file's comment); undefined otherwise.
 */
export function packBucketList(list: readonly unknown[]): Uint8Array | undefined {
  if (list.length === 0) return undefined;
  const { nb, upper, index } = histogramLayout();
  const need = 12 + list.length * 11; // nb, the length, then at most 3 + 8 bytes per triple
  if (scratch.length < need) scratch = new Uint8Array(need * 2);
  let pos = putVarint(scratch, 0, nb);
  pos = putVarint(scratch, pos, list.length);
  let prev = -1;
  for (const t of list) {
    if (!Array.isArray(t) || t.length !== 3) return undefined;
    const [lo, hi, c] = t as unknown[];
    if (typeof lo !== 'number' || typeof c !== 'number' || Object.is(lo, -0)) return undefined;
    const i = index.get(lo);
    if (i === undefined || i <= prev || hi !== upper[i]) return undefined;
    if (!Number.isSafeInteger(c) || c < 0 || Object.is(c, -0)) return undefined;
    pos = putVarint(scratch, pos, i - prev - 1);
    pos = putVarint(scratch, pos, c);
    prev = i;
  }
  return scratch.slice(0, pos);
}

/** The triples of a compact bucket list's extension data (throws on data no writer gives). */
export function unpackBucketList(data: Uint8Array): Triple[] {
  const { nb, lower, upper } = histogramLayout();
  const end = data.length;
  let pos = 0;
  const varint = (): number => {
    let b = data[pos++];
    if (b < 0x80) return b;
    let v = b & 0x7f;
    let scale = 0x80;
    for (;;) {
      if (pos >= end) throw new Error('a compact bucket list ends inside a number');
      b = data[pos++];
      v += (b & 0x7f) * scale;
      if (b < 0x80) {
        if (v > Number.MAX_SAFE_INTEGER) throw new Error('a compact bucket list holds a number above 2^53');
        return v;
      }
      scale *= 0x80;
      if (scale > 2 ** 56) throw new Error('a compact bucket list holds a number above 2^53');
    }
  };
  if (end === 0) throw new Error('a compact bucket list is empty');
  const layoutOf = varint();
  if (layoutOf !== nb) {
    throw new Error(
      `a bucket list refers to a histogram of ${String(layoutOf)} buckets; this meshprobe's has ${String(nb)}`,
    );
  }
  const n = varint();
  if (n > end - pos) throw new Error(`a compact bucket list of ${String(n)} buckets in ${String(end)} bytes`);
  // eslint-disable-next-line @typescript-eslint/no-unsafe-assignment -- filled below, every element (one allocation)
  const out: Triple[] = new Array(n);
  let i = -1;
  for (let k = 0; k < n; k++) {
    if (pos >= end) throw new Error('a compact bucket list ends before its last bucket');
    i += varint() + 1;
    if (pos >= end) throw new Error('a compact bucket list ends between a bucket and its count');
    const c = varint();
    if (i >= nb) throw new Error(`a compact bucket list names bucket ${String(i)} of ${String(nb)}`);
    out[k] = [lower[i], upper[i], c];
  }
  if (pos !== end) throw new Error(`a compact bucket list has ${String(end - pos)} bytes after its last bucket`);
  return out;
}

addExtension({
  Class: PackedBuckets,
  type: BUCKETS_EXT,
  pack: (p: PackedBuckets) => p.data,
  unpack: (data: Uint8Array) => unpackBucketList(data),
});

/** `v` (a value JSON.parse made, changed in place) with its bucket lists as PackedBuckets. */
function compactBuckets(v: unknown): unknown {
  if (Array.isArray(v)) {
    if (Array.isArray(v[0])) {
      const data = packBucketList(v);
      if (data) return new PackedBuckets(data);
    }
    for (let i = 0; i < v.length; i++) v[i] = compactBuckets(v[i]);
  } else if (typeof v === 'object' && v !== null) {
    const o = v as Record<string, unknown>;
    for (const k of Object.keys(o)) o[k] = compactBuckets(o[k]);
  }
  return v;
}

/** A writer of record files: the header, then records in order (one Packr: the shapes defined so far are shared). */
export class RecordEncoder {
  private readonly packr = new Packr({ ...RECORD_OPTIONS });

  /** The bytes of one record: `obj` as its JSON text would give it back (a copy: Packr reuses its buffer). */
  encode(obj: unknown): Buffer {
    const json = JSON.stringify(obj) as string | undefined;
    if (json === undefined) throw new TypeError('a record must be a JSON value (got undefined or a function)');
    return Buffer.from(this.packr.pack(compactBuckets(JSON.parse(json))));
  }
}

/** The file's bytes for `records` (tests, the bench, conversions): the header, then each record. */
export function encodeRecords(records: Iterable<unknown>): Buffer {
  const enc = new RecordEncoder();
  const parts = [RECORDS_HEADER];
  for (const r of records) parts.push(enc.encode(r));
  return Buffer.concat(parts);
}

/**
 * The --format msgpack output: JsonStream's file handling (synchronous
 * writes, EPIPE reported through `closed`, a full disk through `failed`) with
 * records instead of lines; `lines` counts the records written.
 */
export class MsgpackStream extends JsonStream {
  private readonly records = new RecordEncoder();

  constructor(file: string) {
    super(file);
    this.writeBytes(RECORDS_HEADER, false);
  }

  protected override encode(obj: unknown): Buffer {
    return this.records.encode(obj);
  }
}
