/**
 * --filter expressions: `key=value[,value...]`. Repeated --filter options
 * must all hold; the values of one option are alternatives (any of them).
 *
 *   port=80,443      the socket's local or remote port            (kernel)
 *   pid=1234         the process using the socket                 (kernel)
 *   comm=nginx       the process's name (15 characters at most)   (kernel)
 *   cgroup=PATH      the process is in this cgroup v2 or below    (kernel)
 *   netns=NAME       the socket's network namespace (ip netns)    (kernel)
 *   namespace=prod   Kubernetes namespace: its pods' cgroups      (kernel)
 *   service=NAME     a --services entry, or comm:port, or comm    (kernel)
 *
 * Everything is applied in the kernel (bpf/filter.bpf.h), once per socket,
 * at its first read or write; src/filter/resolve.ts turns names into the
 * numbers the kernel compares.
 */
import { usageError } from '../errors.js';

export const FILTER_KEYS = ['port', 'pid', 'comm', 'cgroup', 'netns', 'namespace', 'service'] as const;
export type FilterKey = (typeof FILTER_KEYS)[number];

export interface FilterClause {
  key: FilterKey;
  /** alternatives: any of them */
  values: string[];
  /** the expression as given */
  text: string;
}

const EXAMPLE =
  'e.g. port=80, pid=1234, comm=nginx, service=api-server, netns=blue, namespace=production, cgroup=/system.slice/nginx.service';

export function parseFilters(list: readonly string[]): FilterClause[] {
  return list.map(parseFilter);
}

export function parseFilter(expr: string): FilterClause {
  const m = /^\s*([a-z]+)\s*=\s*(.*?)\s*$/.exec(expr);
  if (!m) throw usageError(`invalid --filter "${expr}": use key=value (${EXAMPLE})`);
  const key = m[1] as FilterKey;
  if (!FILTER_KEYS.includes(key)) {
    throw usageError(`unknown --filter key "${m[1]}" in "${expr}": use one of ${FILTER_KEYS.join(', ')}`);
  }
  const values = m[2].split(',').map((v) => v.trim());
  if (values.length === 0 || values.some((v) => v === '')) {
    throw usageError(`invalid --filter "${expr}": empty value; use ${key}=VALUE or ${key}=A,B for any of several`);
  }
  for (const v of values) checkValue(key, v, expr);
  return { key, values, text: expr.trim() };
}

function checkValue(key: FilterKey, v: string, expr: string): void {
  const bad = (why: string) => usageError(`invalid --filter "${expr}": ${why}`);
  switch (key) {
    case 'port':
      if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > 65535)
        throw bad(`port "${v}" must be a number from 1 to 65535`);
      break;
    case 'pid':
      if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > 4194304) throw bad(`pid "${v}" must be a process id`);
      break;
    case 'comm':
      if (Buffer.byteLength(v) > 15)
        throw bad(`comm "${v}" is longer than the kernel's 15 characters; use its first 15`);
      break;
    case 'namespace':
      if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(v) || v.length > 63)
        throw bad(`"${v}" is not a Kubernetes namespace name`);
      break;
    default:
      break;
  }
}
