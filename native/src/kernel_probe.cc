// Start-up probes of what the running kernel allows, as libbpf-tools does
// (trace_helpers.c: fentry_can_attach). Tracepoint and kprobe availability
// are read from tracefs by src/kernel/features.ts.
#include "kernel_probe.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "errors.h"

namespace meshprobe {

// fentryCanAttach(func): {ok, errno}. Loads a 2-instruction fentry program on
// `func`; kernels without BTF trampolines (or that forbid them) refuse it.
Napi::Value FentryCanAttach(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) ThrowCode(env, "MP_ERR_ARG", "fentryCanAttach(func)");
  std::string func = info[0].As<Napi::String>();
  Napi::Object out = Napi::Object::New(env);
  btf *vmlinux = btf__load_vmlinux_btf();
  int err = libbpf_get_error(vmlinux);
  if (err) {
    out.Set("ok", false);
    out.Set("errno", -err);
    out.Set("reason", "no kernel BTF");
    return out;
  }
  int id = btf__find_by_name_kind(vmlinux, func.c_str(), BTF_KIND_FUNC);
  btf__free(vmlinux);
  if (id <= 0) {
    out.Set("ok", false);
    out.Set("errno", ENOENT);
    out.Set("reason", "function not in kernel BTF");
    return out;
  }
  bpf_insn insns[2];
  memset(insns, 0, sizeof insns);
  insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K;  // r0 = 0
  insns[0].dst_reg = BPF_REG_0;
  insns[1].code = BPF_JMP | BPF_EXIT;
  LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = BPF_TRACE_FENTRY,
              .attach_btf_id = static_cast<__u32>(id));
  TakeLibbpfLog();
  int fd = bpf_prog_load(BPF_PROG_TYPE_TRACING, "mp_fentry_probe", "GPL", insns, 2, &opts);
  TakeLibbpfLog();
  if (fd < 0) {
    out.Set("ok", false);
    out.Set("errno", -fd);
    out.Set("reason", strerror(-fd));
    return out;
  }
  close(fd);
  out.Set("ok", true);
  out.Set("errno", 0);
  return out;
}

// atomicsSupported(): can this kernel load BPF atomic instructions (5.12+)?
// Loads a socket filter that does a compare-and-swap on its stack.
Napi::Value AtomicsSupported(const Napi::CallbackInfo &info) {
  bpf_insn insns[6];
  memset(insns, 0, sizeof insns);
  insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K;  // r1 = 0
  insns[0].dst_reg = BPF_REG_1;
  insns[1].code = BPF_STX | BPF_MEM | BPF_DW;  // *(u64 *)(r10 - 8) = r1
  insns[1].dst_reg = BPF_REG_10;
  insns[1].src_reg = BPF_REG_1;
  insns[1].off = -8;
  insns[2].code = BPF_ALU64 | BPF_MOV | BPF_K;  // r0 = 0
  insns[2].dst_reg = BPF_REG_0;
  insns[3].code = BPF_STX | BPF_ATOMIC | BPF_DW;  // r0 = cmpxchg((u64 *)(r10 - 8), r0, r1)
  insns[3].dst_reg = BPF_REG_10;
  insns[3].src_reg = BPF_REG_1;
  insns[3].off = -8;
  insns[3].imm = BPF_CMPXCHG;
  insns[4].code = BPF_ALU64 | BPF_MOV | BPF_K;  // r0 = 0
  insns[4].dst_reg = BPF_REG_0;
  insns[5].code = BPF_JMP | BPF_EXIT;
  int fd = bpf_prog_load(BPF_PROG_TYPE_SOCKET_FILTER, "mp_atomics", "GPL", insns, 6, nullptr);
  TakeLibbpfLog();
  if (fd >= 0) close(fd);
  return Napi::Boolean::New(info.Env(), fd >= 0);
}

Napi::Value LibbpfVersion(const Napi::CallbackInfo &info) {
  return Napi::String::New(info.Env(), libbpf_version_string());
}

Napi::Value PossibleCpus(const Napi::CallbackInfo &info) {
  int n = libbpf_num_possible_cpus();
  if (n <= 0) ThrowCode(info.Env(), "MP_ERR_SYS", "cannot count possible CPUs", n);
  return Napi::Number::New(info.Env(), n);
}

Napi::Value SetDebug(const Napi::CallbackInfo &info) {
  SetLibbpfDebug(info.Length() > 0 && info[0].ToBoolean());
  return info.Env().Undefined();
}

}  // namespace meshprobe
