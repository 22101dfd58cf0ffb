// meshprobe's N-API addon over libbpf. Context-aware: every environment (the
// main thread and each worker) gets its own instance data (Napi::Addon).
#include <napi.h>

#include "bpf_object.h"
#include "errors.h"
#include "kernel_probe.h"
#include "perf_reader.h"
#include "process.h"

namespace meshprobe {

class Addon : public Napi::Addon<Addon> {
 public:
  Addon(Napi::Env env, Napi::Object exports) {
    InstallLibbpfLog();
    DefineAddon(exports, {
                             InstanceValue("BpfObject", BpfObject::Define(env)),
                             InstanceValue("PerfReader", PerfReader::Define(env)),
                             InstanceMethod<&Addon::Fentry>("fentryCanAttach"),
                             InstanceMethod<&Addon::Atomics>("atomicsSupported"),
                             InstanceMethod<&Addon::Version>("libbpfVersion"),
                             InstanceMethod<&Addon::Cpus>("possibleCpus"),
                             InstanceMethod<&Addon::Debug>("setDebug"),
                             InstanceMethod<&Addon::ParentDeath>("setParentDeathSignal"),
                         });
  }

 private:
  Napi::Value Fentry(const Napi::CallbackInfo &info) { return FentryCanAttach(info); }
  Napi::Value Version(const Napi::CallbackInfo &info) { return LibbpfVersion(info); }
  Napi::Value Atomics(const Napi::CallbackInfo &info) { return AtomicsSupported(info); }
  Napi::Value Cpus(const Napi::CallbackInfo &info) { return PossibleCpus(info); }
  Napi::Value Debug(const Napi::CallbackInfo &info) { return SetDebug(info); }
  Napi::Value ParentDeath(const Napi::CallbackInfo &info) { return SetParentDeathSignal(info); }
};

}  // namespace meshprobe

using MeshprobeAddon = meshprobe::Addon;
NODE_API_ADDON(MeshprobeAddon)
