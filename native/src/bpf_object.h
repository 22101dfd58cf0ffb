// BpfObject: one compiled .bpf.o, from open to detach. Used on the main thread.
#pragma once
#include <bpf/libbpf.h>
#include <napi.h>
#include <string>
#include <vector>

namespace meshprobe {

class BpfObject : public Napi::ObjectWrap<BpfObject> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit BpfObject(const Napi::CallbackInfo &info);
  ~BpfObject() override;

 private:
  Napi::Value SetGlobal(const Napi::CallbackInfo &info);
  Napi::Value SetMapMaxEntries(const Napi::CallbackInfo &info);
  Napi::Value SetAutoload(const Napi::CallbackInfo &info);
  Napi::Value Programs(const Napi::CallbackInfo &info);
  Napi::Value Load(const Napi::CallbackInfo &info);
  Napi::Value Attach(const Napi::CallbackInfo &info);
  Napi::Value AttachCgroup(const Napi::CallbackInfo &info);
  Napi::Value AttachUprobe(const Napi::CallbackInfo &info);
  Napi::Value AttachKretprobe(const Napi::CallbackInfo &info);
  Napi::Value KretprobeMisses(const Napi::CallbackInfo &info);
  Napi::Value DetachAll(const Napi::CallbackInfo &info);
  Napi::Value MapFd(const Napi::CallbackInfo &info);
  Napi::Value ReadPercpuArray(const Napi::CallbackInfo &info);
  Napi::Value ProgramStats(const Napi::CallbackInfo &info);
  Napi::Value TestRun(const Napi::CallbackInfo &info);
  Napi::Value MapUpdate(const Napi::CallbackInfo &info);
  Napi::Value ReadPercpuHash(const Napi::CallbackInfo &info);
  Napi::Value MapLookupAndDelete(const Napi::CallbackInfo &info);
  Napi::Value Close(const Napi::CallbackInfo &info);

  bpf_object *RequireOpen(Napi::Env env);
  bpf_program *RequireProgram(Napi::Env env, const std::string &name);
  bpf_map *RequireMap(Napi::Env env, const std::string &name);
  void Destroy();

  bpf_object *obj_ = nullptr;
  bool loaded_ = false;
  // the kernel refused BPF_MAP_LOOKUP_AND_DELETE_ELEM on a hash map (before 5.14): lookup, then delete
  bool lookup_delete_split_ = false;
  // the kernel's ENOTSUPP (not in userspace errno.h)
  static constexpr int kKernelEnotsupp = 524;
  std::vector<bpf_link *> links_;
  // kretprobe events this object made in tracefs ("meshprobe/<event>"), removed at detach
  std::vector<std::string> kprobe_events_;
  std::string tracefs_;
  void RemoveKprobeEvents();
};

}  // namespace meshprobe
