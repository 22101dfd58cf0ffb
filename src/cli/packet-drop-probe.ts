#!/usr/bin/env node
/** packet-drop-probe: every packet the kernel drops, where, why, and whose. */
import { dropProbe, type DropOptions } from '../probes/drops.js';
import { buildDropReport, dropOutputs, dropSummary, DropNamer } from '../report/drops.js';
import {
  addProbeOptions,
  applyCommon,
  checkRequested,
  filtersFrom,
  main,
  newCommand,
  outputFrom,
  runProbeCommand,
  type CommonProbeFlags,
} from './program.js';
import { parsePositiveInt } from './options.js';
import { usageError } from '../errors.js';
import { addPodOptions, podNamesFrom, type PodFlags } from './tcp-command.js';

interface Flags extends CommonProbeFlags, PodFlags {
  maxDropKeys: string;
  maxLabelValues: string;
}

const cmd = addPodOptions(
  addProbeOptions(
    newCommand(
      'packet-drop-probe',
      'Counts every packet the kernel drops: reason, kernel function, layer, flow and service.',
    ),
    'drops.json',
  ),
)
  .option(
    '--max-drop-keys <n>',
    'distinct (function, reason, flow) keys counted in the kernel at once (keys idle 60 s move to user space)',
    '16384',
  )
  .option('--max-label-values <n>', 'distinct services and functions reported; the rest go to "other"', '50')
  .action(async (f: Flags) => {
    applyCommon(f);
    const out = outputFrom(f);
    const { filter, services } = filtersFrom(f);
    // drops happen in softirq context, with no process: only the packet's port and netns can select them
    const byProcess = (f.filter ?? []).find((x) => /^\s*(pid|comm|cgroup|namespace)\s*=/.test(x));
    if (byProcess)
      throw usageError(
        `--filter ${byProcess}: drops have no process to match; packet-drop-probe filters by port= and netns= (and service= entries of ports or netns)`,
      );
    const named = (f.filter ?? []).flatMap(
      (x) =>
        /^\s*service\s*=(.*)$/
          .exec(x)?.[1]
          .split(',')
          .map((v) => v.trim()) ?? [],
    );
    const svcByProcess = services.find((d) => (d.comm.length || d.cgroup.length) && named.includes(d.name));
    if (svcByProcess)
      throw usageError(
        `--filter service=${svcByProcess.name}: its --services entry names a comm or cgroup, which drops do not have; use its ports`,
      );
    const options: DropOptions = { filter, maxKeys: parsePositiveInt(f.maxDropKeys, '--max-drop-keys', 1 << 20) };
    if (checkRequested(f, dropProbe, options)) return;
    const maxLabels = parsePositiveInt(f.maxLabelValues, '--max-label-values', 10000);
    const pods = podNamesFrom(f);
    await runProbeCommand(f, out, {
      def: dropProbe,
      options,
      pipeline: { workers: 1 }, // drops are counted in the kernel: the perf rings stay empty
      reporting: () => {
        const namer = new DropNamer(services, pods);
        return {
          outputs: dropOutputs(namer, maxLabels),
          buildReport: (r, extra) => buildDropReport(r, { filters: filter.expressions, namer, maxLabels, ...extra }),
          summary: dropSummary,
        };
      },
    });
  });

await main(cmd);
