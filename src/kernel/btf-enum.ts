/**
 * Reads the values of an enum from a BTF file (the kernel's own,
 * /sys/kernel/btf/vmlinux, by default): enum skb_drop_reason changes between
 * kernel versions, so its names are taken from the running kernel.
 *
 * BTF layout (include/uapi/linux/btf.h): a header (magic 0xeB9F, version,
 * flags, hdr_len, then type_off/type_len/str_off/str_len relative to the end
 * of the header), a type section of `struct btf_type` records (name_off,
 * info, size/type) each followed by kind-specific data, and a string section.
 */
import { readFileSync } from 'node:fs';
import { MeshprobeError } from '../errors.js';

export const BTF_PATH = '/sys/kernel/btf/vmlinux';

const BTF_MAGIC = 0xeb9f;
const KIND_INT = 1,
  KIND_PTR = 2,
  KIND_ARRAY = 3,
  KIND_STRUCT = 4,
  KIND_UNION = 5,
  KIND_ENUM = 6,
  KIND_FWD = 7,
  KIND_TYPEDEF = 8,
  KIND_VOLATILE = 9,
  KIND_CONST = 10,
  KIND_RESTRICT = 11,
  KIND_FUNC = 12,
  KIND_FUNC_PROTO = 13,
  KIND_VAR = 14,
  KIND_DATASEC = 15,
  KIND_FLOAT = 16,
  KIND_DECL_TAG = 17,
  KIND_TYPE_TAG = 18,
  KIND_ENUM64 = 19;

/** Bytes of kind-specific data after the 12-byte btf_type record. */
function extraSize(kind: number, vlen: number): number {
  switch (kind) {
    case KIND_INT:
      return 4;
    case KIND_ARRAY:
      return 12;
    case KIND_STRUCT:
    case KIND_UNION:
      return 12 * vlen;
    case KIND_ENUM:
      return 8 * vlen;
    case KIND_FUNC_PROTO:
      return 8 * vlen;
    case KIND_VAR:
      return 4;
    case KIND_DATASEC:
      return 12 * vlen;
    case KIND_DECL_TAG:
      return 4;
    case KIND_ENUM64:
      return 12 * vlen;
    case KIND_PTR:
    case KIND_FWD:
    case KIND_TYPEDEF:
    case KIND_VOLATILE:
    case KIND_CONST:
    case KIND_RESTRICT:
    case KIND_FUNC:
    case KIND_FLOAT:
    case KIND_TYPE_TAG:
      return 0;
    default:
      throw new MeshprobeError('MP_BTF', `BTF: unknown type kind ${kind}`);
  }
}

interface BtfType {
  kind: number;
  vlen: number;
  signed: boolean;
  data: number;
  name: () => string;
}

/** Readers over one file's bytes: plain closures, used detached (`const { u32 } = openBtf(...)`). */
interface BtfFile {
  u32: (o: number) => number;
  i32: (o: number) => number;
  str: (off: number) => string;
  types: () => Generator<BtfType>;
}

/** Opens a BTF file. Throws MP_BTF when it cannot be read or is not BTF. */
function openBtf(path: string): BtfFile {
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch (e) {
    throw new MeshprobeError('MP_BTF', `cannot read BTF ${path}: ${(e as Error).message}`);
  }
  if (buf.length < 24) throw new MeshprobeError('MP_BTF', `${path}: too short for BTF`);
  let le = true;
  if (buf.readUInt16LE(0) !== BTF_MAGIC) {
    if (buf.readUInt16BE(0) !== BTF_MAGIC) throw new MeshprobeError('MP_BTF', `${path}: not BTF (bad magic)`);
    le = false;
  }
  const u32 = (o: number): number => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  const i32 = (o: number): number => (le ? buf.readInt32LE(o) : buf.readInt32BE(o));
  const hdrLen = u32(4);
  const typeOff = hdrLen + u32(8);
  const typeLen = u32(12);
  const strOff = hdrLen + u32(16);
  const strLen = u32(20);
  if (typeOff + typeLen > buf.length || strOff + strLen > buf.length) {
    throw new MeshprobeError('MP_BTF', `${path}: sections beyond the end of the file`);
  }
  const str = (off: number): string => {
    const start = strOff + off;
    const end = buf.indexOf(0, start);
    return buf.toString('latin1', start, end < 0 || end > strOff + strLen ? strOff + strLen : end);
  };
  function* types(): Generator<BtfType> {
    for (let p = typeOff; p + 12 <= typeOff + typeLen;) {
      const nameOff = u32(p);
      const info = u32(p + 4);
      const kind = (info >>> 24) & 0x1f;
      const vlen = info & 0xffff;
      const data = p + 12;
      yield { kind, vlen, signed: info >>> 31 === 1, data, name: () => (nameOff === 0 ? '' : str(nameOff)) };
      p = data + extraSize(kind, vlen);
    }
  }
  return { u32, i32, str, types };
}

const cache = new Map<string, Map<string, Map<number, string>>>();

/**
 * The values of `enum name` in the BTF file at `path`: value -> enumerator
 * name. Throws (code MP_BTF) when the file is not BTF or has no such enum.
 * Results are cached per (path, name).
 */
export function btfEnum(name: string, path: string = BTF_PATH): Map<number, string> {
  const byName = cache.get(path) ?? new Map<string, Map<number, string>>();
  cache.set(path, byName);
  const hit = byName.get(name);
  if (hit) return hit;

  const { u32, i32, str, types } = openBtf(path);
  let found: Map<number, string> | undefined;
  for (const t of types()) {
    if ((t.kind === KIND_ENUM || t.kind === KIND_ENUM64) && t.name() === name) {
      found = new Map();
      for (let i = 0; i < t.vlen; i++) {
        if (t.kind === KIND_ENUM) {
          const e = t.data + 8 * i;
          const v = t.signed ? i32(e + 4) : u32(e + 4);
          found.set(v, str(u32(e)));
        } else {
          const e = t.data + 12 * i;
          const lo = BigInt(u32(e + 4));
          const hi = BigInt(u32(e + 8));
          let v = (hi << 32n) | lo;
          if (t.signed) v = BigInt.asIntN(64, v);
          found.set(Number(v), str(u32(e)));
        }
      }
      break;
    }
  }
  if (!found) throw new MeshprobeError('MP_BTF', `${path}: no enum ${name}`);
  byName.set(name, found);
  return found;
}

/**
 * Does the BTF file at `path` describe a function `name` (a kfunc a program
 * calls, a function to attach to)? Throws MP_BTF when the file is not BTF.
 */
export function btfHasFunc(name: string, path: string = BTF_PATH): boolean {
  for (const t of openBtf(path).types()) if (t.kind === KIND_FUNC && t.name() === name) return true;
  return false;
}
