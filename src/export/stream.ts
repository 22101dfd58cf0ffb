/**
 * --format json-stream: one JSON object per line (NDJSON), written and
 * flushed (a synchronous write) at each aggregation interval. A consumer that
 * goes away (EPIPE: the pipe was closed) is reported once through `closed`,
 * never thrown: the probe then stops cleanly.
 */
import { closeSync, openSync, writeSync } from 'node:fs';

export class JsonStream {
  private fd: number;
  private own: boolean;
  /** set when the reader went away (EPIPE) or the file cannot be written any more */
  closed: string | undefined;
  /** true when `closed` is an error (ENOSPC, EIO, ...), not a reader that went away */
  failed = false;
  lines = 0;

  constructor(file: string) {
    if (file === '-' || file === '/dev/stdout') {
      this.fd = 1;
      this.own = false;
    } else {
      this.fd = openSync(file, 'w');
      this.own = true;
    }
  }

  /** Writes one object as a line; false when the stream is closed. */
  write(obj: unknown): boolean {
    if (this.closed) return false;
    return this.writeBytes(this.encode(obj), true);
  }

  /** One object as the bytes of the stream (--format msgpack: src/export/msgpack.ts encodes otherwise). */
  protected encode(obj: unknown): Buffer {
    return Buffer.from(JSON.stringify(obj) + '\n');
  }

  /** Writes `buf` whole (counted in `lines` when `counted`); false when the stream is closed. */
  protected writeBytes(buf: Buffer, counted: boolean): boolean {
    if (this.closed) return false;
    let off = 0;
    try {
      while (off < buf.length) off += writeSync(this.fd, buf, off);
      if (counted) this.lines++;
      return true;
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      // what was written stays written: the rest, not the whole again (a record twice breaks the stream)
      if (err.code === 'EAGAIN') return this.retry(buf, off, counted);
      this.fail(err);
      return false;
    }
  }

  /** stdout may be non-blocking (a pipe): wait for room, briefly, rather than lose a line. */
  private retry(buf: Buffer, from: number, counted: boolean): boolean {
    const deadline = Date.now() + 5000;
    let off = from;
    while (off < buf.length) {
      try {
        off += writeSync(this.fd, buf, off);
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        if (err.code !== 'EAGAIN' || Date.now() > deadline) {
          this.fail(err);
          return false;
        }
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
      }
    }
    if (counted) this.lines++;
    return true;
  }

  private fail(err: NodeJS.ErrnoException): void {
    this.failed = err.code !== 'EPIPE';
    this.closed =
      err.code === 'EPIPE' ? 'the reader closed the stream' : `cannot write the stream (${err.code ?? err.message})`;
  }

  close(): void {
    if (this.own) closeSync(this.fd);
    this.own = false; // once
  }
}
