// Choosing hooks: parsing which program the kernel refused, and moving that
// slot to its next candidate (what happens on Debian 5.10, where fentry
// exists but bpf_get_func_arg/ret do not: the fexit programs that read the
// arguments by prototype load there instead; see test/kernel-matrix.test.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nextChoice, refusedProgram, type HookChoice } from '../src/kernel/features.js';
import { latencyProbe } from '../src/probes/latency.js';

const LOG_510 = `libbpf: prog 'latency_send_fx': BPF program load failed: Invalid argument
libbpf: prog 'latency_send_fx': -- BEGIN PROG LOAD LOG --
unknown func bpf_get_func_arg#183
processed 12 insns (limit 1000000)
-- END PROG LOAD LOG --
libbpf: prog 'latency_send_fx': failed to load: -22
libbpf: failed to load object 'latency.noatomics.bpf.o'`;

function chosen(fexit: boolean): HookChoice[] {
  return Object.entries(latencyProbe.hooks).map(([slot, cands]) => {
    const c = fexit && cands[1] ? cands[1] : cands[0];
    return { slot, chosen: c, tried: [{ name: c.name, ok: true }] };
  });
}

/** The choice of slot `name`; fails the test when there are no choices or no such slot. */
function slot(choices: HookChoice[] | undefined, name: string): HookChoice {
  assert.ok(choices, 'a next choice');
  const c = choices.find((x) => x.slot === name);
  assert.ok(c, `slot ${name}`);
  return c;
}

test('refusedProgram reads the program libbpf names last', () => {
  assert.equal(refusedProgram(LOG_510), 'latency_send_fx');
  assert.equal(refusedProgram('libbpf: something else'), undefined);
  assert.equal(refusedProgram(undefined), undefined);
});

test('nextChoice moves only the refused slot to its next available candidate', () => {
  const before = chosen(true);
  const after = nextChoice(latencyProbe.hooks, before, 'latency_send_fx', 'refused by the verifier', () => ({
    ok: true,
  }));
  assert.ok(after);
  const send = slot(after, 'socket send');
  assert.equal(send.chosen?.name, 'fexit:tcp_sendmsg (by prototype)');
  assert.deepEqual(
    send.tried.map((t) => [t.name, t.ok]),
    [
      ['fexit:tcp_sendmsg', false],
      ['fexit:tcp_sendmsg (by prototype)', true],
    ],
  );
  // refused again (a kernel whose prototype differs): on to the kprobes
  const third = nextChoice(latencyProbe.hooks, after, 'latency_send_fa', 'refused by the verifier', () => ({
    ok: true,
  }));
  const send3 = slot(third, 'socket send');
  assert.equal(send3.chosen?.name, 'kprobe:tcp_sendmsg');
  assert.deepEqual(
    send3.tried.map((t) => [t.name, t.ok]),
    [
      ['fexit:tcp_sendmsg', false],
      ['fexit:tcp_sendmsg (by prototype)', false],
      ['kprobe:tcp_sendmsg', true],
    ],
  );
  assert.equal(slot(after, 'socket receive').chosen?.name, 'fexit:tcp_recvmsg', 'other slots unchanged');
  assert.equal(slot(after, 'tcp state').chosen, slot(before, 'tcp state').chosen);
});

test('nextChoice gives up when the refused hook is the last one, or unknown', () => {
  const fa = nextChoice(latencyProbe.hooks, chosen(true), 'latency_send_fx', 'x', () => ({ ok: true }));
  assert.ok(fa);
  const kp = nextChoice(latencyProbe.hooks, fa, 'latency_send_fa', 'x', () => ({ ok: true }));
  assert.ok(kp);
  assert.equal(slot(kp, 'socket send').chosen?.name, 'kprobe:tcp_sendmsg');
  assert.equal(
    nextChoice(latencyProbe.hooks, kp, 'latency_send_kr', 'x', () => ({ ok: true })),
    undefined,
  );
  assert.equal(nextChoice(latencyProbe.hooks, chosen(false), 'not_ours', 'x'), undefined);
  // a next candidate that is not available is skipped
  assert.equal(
    nextChoice(latencyProbe.hooks, chosen(true), 'latency_send_fx', 'x', () => ({ ok: false, why: 'no kprobes' })),
    undefined,
  );
});
