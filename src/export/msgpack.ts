/**
 * --format msgpack: the content of --format json-stream (one object per
 * aggregation interval, then the summary) as MessagePack records, written and
 * flushed record by record like the stream's lines, so a run killed mid-way
 * leaves a readable prefix.
 *
 * The file: the msgpack string "meshprobe-records/1" (the header: 20 bytes,
 * 0xb3 then the ASCII text; no JSON text can start with byte 0xb3, so a
 * reader tells the formats apart by content), then one msgpack value per
 * record, encoded by msgpackr's Packr with structured records in sequential
 * mode: an object's key list is defined inline the first time its shape
 * appears (msgpackr's record extension, type 0x72) and later objects of that
 * shape refer to it by a one-byte id, across records. A record can therefore
 * only be read after those before it: the file is read from the start
 * (src/input.ts, readRecords).
 *
 * Each record holds exactly what the json-stream line would: the object is
 * taken through JSON first (Dates as ISO strings, undefined fields left out,
 * NaN/Infinity as null, toJSON honoured; the reports hold no bigints: 64-bit
 * keys are strings), so a record decodes to the object JSON.parse gives for
 * the line, key order included, and converting back to NDJSON
 * (`generate-report --to-ndjson`) gives the json-stream's bytes.
 */
import { Packr } from 'msgpackr';
import { JsonStream } from './stream.js';

/** The header: the first value of every file, a msgpack string. */
export const RECORDS_MAGIC = 'meshprobe-records/1';

/** The header as bytes: fixstr (0xa0 | length), then the text. */
export const RECORDS_HEADER: Buffer = Buffer.concat([
  Buffer.from([0xa0 | RECORDS_MAGIC.length]),
  Buffer.from(RECORDS_MAGIC, 'latin1'),
]);

/** The options both sides use: records defined inline, in order (msgpackr's sequential mode). */
export const RECORD_OPTIONS = { useRecords: true, sequential: true } as const;

/** A writer of record files: the header, then records in order (one Packr: the shapes defined so far are shared). */
export class RecordEncoder {
  private readonly packr = new Packr({ ...RECORD_OPTIONS });

  /** The bytes of one record: `obj` as its JSON text would give it back (a copy: Packr reuses its buffer). */
  encode(obj: unknown): Buffer {
    const json = JSON.stringify(obj) as string | undefined;
    if (json === undefined) throw new TypeError('a record must be a JSON value (got undefined or a function)');
    return Buffer.from(this.packr.pack(JSON.parse(json)));
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
