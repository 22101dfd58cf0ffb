#include "bpf_object.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

#include "errors.h"

namespace meshprobe {

// Arguments, checked: a wrong type throws MP_ERR_ARG with the call's usage.
static std::string StringArg(const Napi::CallbackInfo &info, size_t i, const char *usage) {
  if (info.Length() <= i || !info[i].IsString()) ThrowCode(info.Env(), "MP_ERR_ARG", usage);
  return info[i].As<Napi::String>();
}

static uint32_t UintArg(const Napi::CallbackInfo &info, size_t i, const char *usage) {
  if (info.Length() <= i || !info[i].IsNumber() || info[i].As<Napi::Number>().DoubleValue() < 0)
    ThrowCode(info.Env(), "MP_ERR_ARG", usage);
  return info[i].As<Napi::Number>().Uint32Value();
}

Napi::Function BpfObject::Define(Napi::Env env) {
  return DefineClass(env, "BpfObject",
                     {
                         InstanceMethod<&BpfObject::SetGlobal>("setGlobal"),
                         InstanceMethod<&BpfObject::SetMapMaxEntries>("setMapMaxEntries"),
                         InstanceMethod<&BpfObject::SetAutoload>("setAutoload"),
                         InstanceMethod<&BpfObject::Programs>("programs"),
                         InstanceMethod<&BpfObject::Load>("load"),
                         InstanceMethod<&BpfObject::Attach>("attach"),
                         InstanceMethod<&BpfObject::AttachCgroup>("attachCgroup"),
                         InstanceMethod<&BpfObject::AttachUprobe>("attachUprobe"),
                         InstanceMethod<&BpfObject::AttachKretprobe>("attachKretprobe"),
                         InstanceMethod<&BpfObject::KretprobeMisses>("kretprobeMisses"),
                         InstanceMethod<&BpfObject::DetachAll>("detachAll"),
                         InstanceMethod<&BpfObject::MapFd>("mapFd"),
                         InstanceMethod<&BpfObject::ReadPercpuArray>("readPercpuArray"),
                         InstanceMethod<&BpfObject::ProgramStats>("programStats"),
                         InstanceMethod<&BpfObject::TestRun>("testRun"),
                         InstanceMethod<&BpfObject::MapUpdate>("mapUpdate"),
                         InstanceMethod<&BpfObject::ReadPercpuHash>("readPercpuHash"),
                         InstanceMethod<&BpfObject::MapLookupAndDelete>("mapLookupAndDelete"),
                         InstanceMethod<&BpfObject::Close>("close"),
                     });
}

// new BpfObject(path[, {btfCustomPath}]): bpf_object__open_file
BpfObject::BpfObject(const Napi::CallbackInfo &info) : Napi::ObjectWrap<BpfObject>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) ThrowCode(env, "MP_ERR_ARG", "BpfObject(path): path must be a string");
  std::string path = info[0].As<Napi::String>();
  // optional {btfCustomPath}: kernel BTF from a file instead of /sys/kernel/btf/vmlinux
  std::string btf_path;
  if (info.Length() > 1 && info[1].IsObject()) {
    Napi::Value v = info[1].As<Napi::Object>().Get("btfCustomPath");
    if (v.IsString()) btf_path = v.As<Napi::String>();
  }
  LIBBPF_OPTS(bpf_object_open_opts, opts, .btf_custom_path = btf_path.empty() ? nullptr : btf_path.c_str());
  TakeLibbpfLog();
  obj_ = bpf_object__open_file(path.c_str(), &opts);
  int err = libbpf_get_error(obj_);
  if (err) {
    obj_ = nullptr;
    ThrowCode(env, "MP_ERR_BPF_OPEN", "cannot open BPF object " + path, err);
  }
}

BpfObject::~BpfObject() { Destroy(); }

void BpfObject::Destroy() {
  for (bpf_link *l : links_) bpf_link__destroy(l);
  links_.clear();
  RemoveKprobeEvents();
  if (obj_) bpf_object__close(obj_);
  obj_ = nullptr;
}

bpf_object *BpfObject::RequireOpen(Napi::Env env) {
  if (!obj_) ThrowCode(env, "MP_ERR_CLOSED", "BPF object is closed");
  return obj_;
}

bpf_program *BpfObject::RequireProgram(Napi::Env env, const std::string &name) {
  bpf_program *p = bpf_object__find_program_by_name(RequireOpen(env), name.c_str());
  if (!p) ThrowCode(env, "MP_ERR_NO_PROGRAM", "no BPF program named " + name);
  return p;
}

bpf_map *BpfObject::RequireMap(Napi::Env env, const std::string &name) {
  bpf_map *m = bpf_object__find_map_by_name(RequireOpen(env), name.c_str());
  if (!m) ThrowCode(env, "MP_ERR_NO_MAP", "no BPF map named " + name);
  return m;
}

// setGlobal(name, value): writes a `const volatile` global before load.
Napi::Value BpfObject::SetGlobal(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  bpf_object *obj = RequireOpen(env);
  if (loaded_) ThrowCode(env, "MP_ERR_STATE", "settings must be written before load()");
  if (info.Length() < 2 || !info[0].IsString()) ThrowCode(env, "MP_ERR_ARG", "setGlobal(name, value)");
  std::string name = info[0].As<Napi::String>();
  uint64_t value = 0;
  const uint8_t *bytes = nullptr;  // a Uint8Array: raw bytes of a struct or array setting
  size_t nbytes = 0;
  if (info[1].IsTypedArray() && info[1].As<Napi::TypedArray>().TypedArrayType() == napi_uint8_array) {
    Napi::Uint8Array a = info[1].As<Napi::Uint8Array>();
    bytes = a.Data();
    nbytes = a.ByteLength();
  } else if (info[1].IsBigInt()) {
    bool lossless;
    value = info[1].As<Napi::BigInt>().Uint64Value(&lossless);
  } else if (info[1].IsBoolean()) {
    value = info[1].As<Napi::Boolean>() ? 1 : 0;
  } else if (info[1].IsNumber()) {
    value = static_cast<uint64_t>(info[1].As<Napi::Number>().Int64Value());
  } else {
    ThrowCode(env, "MP_ERR_ARG", "setGlobal: value must be a number, bigint, boolean or Uint8Array");
  }

  const btf *b = bpf_object__btf(obj);
  if (!b) ThrowCode(env, "MP_ERR_NO_BTF", "BPF object has no BTF: cannot find " + name);
  int sec_id = btf__find_by_name_kind(b, ".rodata", BTF_KIND_DATASEC);
  if (sec_id < 0) ThrowCode(env, "MP_ERR_NO_GLOBAL", "BPF object has no .rodata settings");
  const btf_type *sec = btf__type_by_id(b, sec_id);
  const btf_var_secinfo *vs = btf_var_secinfos(sec);
  for (int i = 0; i < btf_vlen(sec); i++, vs++) {
    const btf_type *var = btf__type_by_id(b, vs->type);
    if (name != btf__name_by_offset(b, var->name_off)) continue;
    bpf_map *rodata = nullptr;
    bpf_map *m;
    bpf_object__for_each_map(m, obj) {
      const char *mn = bpf_map__name(m);
      size_t len = strlen(mn);
      if (bpf_map__is_internal(m) && len >= 7 && strcmp(mn + len - 7, ".rodata") == 0) rodata = m;
    }
    if (!rodata) ThrowCode(env, "MP_ERR_NO_GLOBAL", "BPF object has no .rodata map");
    size_t size = 0;
    auto *data = const_cast<uint8_t *>(static_cast<const uint8_t *>(bpf_map__initial_value(rodata, &size)));
    if (!data || vs->offset + vs->size > size) ThrowCode(env, "MP_ERR_NO_GLOBAL", "cannot write setting " + name);
    if (bytes) {
      if (nbytes != vs->size)
        ThrowCode(env, "MP_ERR_ARG",
                  "setting " + name + " is " + std::to_string(vs->size) + " bytes, not " + std::to_string(nbytes));
      memcpy(data + vs->offset, bytes, nbytes);
      return env.Undefined();
    }
    if (vs->size != 1 && vs->size != 2 && vs->size != 4 && vs->size != 8)
      ThrowCode(env, "MP_ERR_ARG", "setting " + name + " is not an integer");
    memcpy(data + vs->offset, &value, vs->size);  // little-endian: low bytes first
    return env.Undefined();
  }
  ThrowCode(env, "MP_ERR_NO_GLOBAL", "BPF object has no setting named " + name);
}

Napi::Value BpfObject::SetMapMaxEntries(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  const char *usage = "setMapMaxEntries(map, entries)";
  bpf_map *m = RequireMap(env, StringArg(info, 0, usage));
  int err = bpf_map__set_max_entries(m, UintArg(info, 1, usage));
  if (err) ThrowCode(env, "MP_ERR_STATE", "cannot size map", err);
  return env.Undefined();
}

Napi::Value BpfObject::SetAutoload(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  bpf_program *p = RequireProgram(env, StringArg(info, 0, "setAutoload(program, on)"));
  int err = bpf_program__set_autoload(p, info[1].ToBoolean());
  if (err) ThrowCode(env, "MP_ERR_STATE", "cannot change autoload", err);
  return env.Undefined();
}

// programs(): [{name, section, autoload, id}]
Napi::Value BpfObject::Programs(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  bpf_object *obj = RequireOpen(env);
  Napi::Array out = Napi::Array::New(env);
  bpf_program *p;
  uint32_t i = 0;
  bpf_object__for_each_program(p, obj) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", bpf_program__name(p));
    o.Set("section", bpf_program__section_name(p));
    o.Set("autoload", bpf_program__autoload(p));
    out.Set(i++, o);
  }
  return out;
}

Napi::Value BpfObject::Load(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  bpf_object *obj = RequireOpen(env);
  TakeLibbpfLog();
  int err = bpf_object__load(obj);
  if (err) ThrowCode(env, "MP_ERR_BPF_LOAD", "the kernel refused the BPF programs", err);
  loaded_ = true;
  return env.Undefined();
}

// attach(program): bpf_program__attach, from the SEC() name
Napi::Value BpfObject::Attach(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string name = StringArg(info, 0, "attach(program)");
  bpf_program *p = RequireProgram(env, name);
  TakeLibbpfLog();
  bpf_link *link = bpf_program__attach(p);
  int err = libbpf_get_error(link);
  if (err) ThrowCode(env, "MP_ERR_ATTACH", "cannot attach " + name, err);
  links_.push_back(link);
  return env.Undefined();
}

// attachCgroup(program, cgroupPath): bpf_program__attach_cgroup on the cgroup v2
// directory (a BPF link: gone when detachAll() or close() destroys it)
Napi::Value BpfObject::AttachCgroup(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString())
    ThrowCode(env, "MP_ERR_ARG", "attachCgroup(program, cgroupPath)");
  std::string name = info[0].As<Napi::String>();
  std::string path = info[1].As<Napi::String>();
  bpf_program *p = RequireProgram(env, name);
  if (bpf_program__fd(p) < 0) ThrowCode(env, "MP_ERR_STATE", name + " is not loaded");
  int fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) ThrowCode(env, "MP_ERR_CGROUP", "cannot open cgroup " + path, -errno);
  TakeLibbpfLog();
  bpf_link *link = bpf_program__attach_cgroup(p, fd);
  int err = libbpf_get_error(link);
  close(fd);  // the link holds the cgroup
  if (err) ThrowCode(env, "MP_ERR_ATTACH", "cannot attach " + name + " to cgroup " + path, err);
  links_.push_back(link);
  return env.Undefined();
}

// attachUprobe(program, binaryPath, funcName, retprobe): a uprobe (or uretprobe)
// on a function of an ELF file, every process (pid -1); libbpf finds the offset
Napi::Value BpfObject::AttachUprobe(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsString() || !info[1].IsString() || !info[2].IsString())
    ThrowCode(env, "MP_ERR_ARG", "attachUprobe(program, binaryPath, funcName, retprobe)");
  std::string name = info[0].As<Napi::String>();
  std::string binary = info[1].As<Napi::String>();
  std::string func = info[2].As<Napi::String>();
  bool ret = info.Length() > 3 && info[3].ToBoolean();
  bpf_program *p = RequireProgram(env, name);
  if (bpf_program__fd(p) < 0) ThrowCode(env, "MP_ERR_STATE", name + " is not loaded");
  LIBBPF_OPTS(bpf_uprobe_opts, opts, .retprobe = ret, .func_name = func.c_str());
  TakeLibbpfLog();
  bpf_link *link = bpf_program__attach_uprobe_opts(p, -1, binary.c_str(), 0, &opts);
  int err = libbpf_get_error(link);
  if (err)
    ThrowCode(
        env, "MP_ERR_ATTACH",
        "cannot attach " + name + std::string(ret ? " (uretprobe)" : " (uprobe)") + " to " + func + " in " + binary,
        err);
  links_.push_back(link);
  return env.Undefined();
}

// Writes one line to tracefs's kprobe_events; 0 or -errno.
static int WriteKprobeEvents(const std::string &tracefs, const std::string &line) {
  int fd = open((tracefs + "/kprobe_events").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0) return -errno;
  ssize_t n = write(fd, line.c_str(), line.size());
  int err = n < 0 ? -errno : 0;
  close(fd);
  return err;
}

void BpfObject::RemoveKprobeEvents() {
  for (const std::string &e : kprobe_events_) WriteKprobeEvents(tracefs_, "-:" + e);
  kprobe_events_.clear();
}

// attachKretprobe(program, func, maxactive, tracefs): a kretprobe made through
// tracefs ("r<maxactive>:meshprobe/<event> <func>"), the program attached to
// it as a perf event. The kernel keeps `maxactive` return slots for calls in
// flight at once (10 by default on a 2-CPU machine): every call blocked in
// tcp_recvmsg holds one, and a return with no slot left is missed. The
// perf-based kretprobes libbpf makes cannot be given more; these can (up to
// 4096), and their misses are counted in tracefs (kretprobeMisses()).
Napi::Value BpfObject::AttachKretprobe(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsString() || !info[1].IsString() || !info[2].IsNumber() || !info[3].IsString())
    ThrowCode(env, "MP_ERR_ARG", "attachKretprobe(program, func, maxactive, tracefs)");
  std::string name = info[0].As<Napi::String>();
  std::string func = info[1].As<Napi::String>();
  int maxactive = info[2].As<Napi::Number>().Int32Value();
  std::string tracefs = info[3].As<Napi::String>();
  if (maxactive < 1 || maxactive > 4096) ThrowCode(env, "MP_ERR_ARG", "attachKretprobe: maxactive must be 1..4096");
  bpf_program *p = RequireProgram(env, name);
  if (bpf_program__fd(p) < 0) ThrowCode(env, "MP_ERR_STATE", name + " is not loaded");
  tracefs_ = tracefs;
  // tracefs is the host's: a name of this run's own (PIDs repeat across PID namespaces)
  char rnd[9];
  snprintf(rnd, sizeof rnd, "%08x", static_cast<unsigned>(random() ^ (getpid() << 8) ^ time(nullptr)));
  std::string event = "mp_" + std::to_string(getpid()) + "_" + rnd + "_" + name;
  std::string full = "meshprobe/" + event;
  int err = WriteKprobeEvents(tracefs, "r" + std::to_string(maxactive) + ":" + full + " " + func);
  if (err)
    ThrowCode(env, "MP_ERR_ATTACH",
              "cannot make kretprobe " + full + " on " + func + " in " + tracefs + "/kprobe_events", err);
  kprobe_events_.push_back(full);
  std::ifstream idf(tracefs + "/events/" + full + "/id");
  long long id = -1;
  if (!(idf >> id) || id < 0) ThrowCode(env, "MP_ERR_ATTACH", "cannot read the id of kretprobe " + full, -ENOENT);
  perf_event_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.size = sizeof attr;
  attr.type = PERF_TYPE_TRACEPOINT;
  attr.config = static_cast<__u64>(id);
  attr.sample_period = 1;
  attr.wakeup_events = 1;
  int pfd = static_cast<int>(syscall(__NR_perf_event_open, &attr, -1, 0, -1, PERF_FLAG_FD_CLOEXEC));
  int open_errno = errno;
  if (pfd < 0) ThrowCode(env, "MP_ERR_ATTACH", "perf_event_open for kretprobe " + full, -open_errno);
  TakeLibbpfLog();
  bpf_link *link = bpf_program__attach_perf_event(p, pfd);
  err = libbpf_get_error(link);
  if (err) {
    close(pfd);
    ThrowCode(env, "MP_ERR_ATTACH", "cannot attach " + name + " to kretprobe " + full, err);
  }
  links_.push_back(link);  // the link owns pfd
  return env.Undefined();
}

// kretprobeMisses(): {event: missed} for this object's kretprobes, from
// tracefs's kprobe_profile ("<event> <hits> <misses>"); -1 for one not found there
Napi::Value BpfObject::KretprobeMisses(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  if (kprobe_events_.empty()) return out;
  for (const std::string &e : kprobe_events_) out.Set(e, Napi::Number::New(env, -1));
  std::ifstream f(tracefs_ + "/kprobe_profile");
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream in(line);
    std::string ev;
    unsigned long long hits = 0, missed = 0;
    if (!(in >> ev >> hits >> missed)) continue;
    for (const std::string &e : kprobe_events_)
      if (e == ev || e.substr(e.find('/') + 1) == ev) out.Set(e, Napi::Number::New(env, static_cast<double>(missed)));
  }
  return out;
}

Napi::Value BpfObject::DetachAll(const Napi::CallbackInfo &info) {
  for (bpf_link *l : links_) bpf_link__destroy(l);
  links_.clear();
  RemoveKprobeEvents();
  return info.Env().Undefined();
}

Napi::Value BpfObject::MapFd(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = bpf_map__fd(RequireMap(env, StringArg(info, 0, "mapFd(map)")));
  if (fd < 0) ThrowCode(env, "MP_ERR_STATE", "map has no fd: load() first", fd);
  return Napi::Number::New(env, fd);
}

// readPercpuArray(map, count): BigInt[count], each summed over all CPUs
Napi::Value BpfObject::ReadPercpuArray(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  const char *usage = "readPercpuArray(map, count)";
  bpf_map *m = RequireMap(env, StringArg(info, 0, usage));
  uint32_t count = UintArg(info, 1, usage);
  int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) ThrowCode(env, "MP_ERR_SYS", "cannot count CPUs", ncpu);
  std::vector<uint64_t> vals(ncpu);
  Napi::Array out = Napi::Array::New(env, count);
  for (uint32_t k = 0; k < count; k++) {
    int err = bpf_map_lookup_elem(bpf_map__fd(m), &k, vals.data());
    if (err) ThrowCode(env, "MP_ERR_MAP_READ", "cannot read map", -errno);
    uint64_t sum = 0;
    for (uint64_t v : vals) sum += v;
    out.Set(k, Napi::BigInt::New(env, sum));
  }
  return out;
}

// programStats(): [{name, id, runTimeNs, runCount}] for loaded programs
// (run time and count are non-zero only while kernel.bpf_stats_enabled=1)
Napi::Value BpfObject::ProgramStats(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  bpf_object *obj = RequireOpen(env);
  Napi::Array out = Napi::Array::New(env);
  bpf_program *p;
  uint32_t i = 0;
  bpf_object__for_each_program(p, obj) {
    int fd = bpf_program__fd(p);
    if (fd < 0) continue;
    bpf_prog_info pi;
    memset(&pi, 0, sizeof pi);
    uint32_t len = sizeof pi;
    if (bpf_obj_get_info_by_fd(fd, &pi, &len)) continue;
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", bpf_program__name(p));
    o.Set("id", pi.id);
    o.Set("runTimeNs", Napi::BigInt::New(env, static_cast<uint64_t>(pi.run_time_ns)));
    o.Set("runCount", Napi::BigInt::New(env, static_cast<uint64_t>(pi.run_cnt)));
    out.Set(i++, o);
  }
  return out;
}

// mapUpdate(map, key: Uint8Array, value: Uint8Array): bpf_map_update_elem(BPF_ANY)
Napi::Value BpfObject::MapUpdate(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  bpf_map *m = RequireMap(env, StringArg(info, 0, "mapUpdate(map, key, value)"));
  if (info.Length() < 3 || !info[1].IsTypedArray() || !info[2].IsTypedArray())
    ThrowCode(env, "MP_ERR_ARG", "mapUpdate(map, key: Uint8Array, value: Uint8Array)");
  Napi::Uint8Array key = info[1].As<Napi::Uint8Array>();
  Napi::Uint8Array value = info[2].As<Napi::Uint8Array>();
  if (key.ByteLength() != bpf_map__key_size(m) || value.ByteLength() != bpf_map__value_size(m))
    ThrowCode(env, "MP_ERR_ARG", std::string("mapUpdate: wrong key or value size for ") + bpf_map__name(m));
  if (bpf_map_update_elem(bpf_map__fd(m), key.Data(), value.Data(), BPF_ANY))
    ThrowCode(env, "MP_ERR_MAP_WRITE", std::string("cannot update map ") + bpf_map__name(m), -errno);
  return env.Undefined();
}

// readPercpuHash(map): [[key: Uint8Array, value: BigUint64Array], ...] for
// every key of a per-CPU hash (or array) map whose value is a run of u64
// words: each word summed over the possible CPUs. Keys deleted while the walk
// runs are skipped; the walk restarts from the first key at most a few times
// if the key it stood on vanished (bpf_map_get_next_key then starts over).
Napi::Value BpfObject::ReadPercpuHash(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) ThrowCode(env, "MP_ERR_ARG", "readPercpuHash(map: string)");
  bpf_map *m = RequireMap(env, info[0].As<Napi::String>());
  int fd = bpf_map__fd(m);
  if (fd < 0) ThrowCode(env, "MP_ERR_STATE", std::string("map ") + bpf_map__name(m) + " is not loaded", fd);
  uint32_t ksize = bpf_map__key_size(m);
  uint32_t vsize = bpf_map__value_size(m);
  if (vsize % 8 != 0)
    ThrowCode(env, "MP_ERR_ARG", std::string("readPercpuHash: value of ") + bpf_map__name(m) + " is not a run of u64");
  int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) ThrowCode(env, "MP_ERR_SYS", "cannot count CPUs", ncpu);
  size_t words = vsize / 8;
  // per-CPU values are each rounded up to 8 bytes: here already a multiple
  std::vector<uint64_t> vals(words * static_cast<size_t>(ncpu));
  std::vector<uint8_t> key(ksize), next(ksize);
  Napi::Array out = Napi::Array::New(env);
  uint32_t n = 0;
  bool first = true;
  for (;;) {
    int err = bpf_map_get_next_key(fd, first ? nullptr : key.data(), next.data());
    if (err) {
      if (errno == ENOENT) break;
      ThrowCode(env, "MP_ERR_MAP_READ", std::string("cannot walk map ") + bpf_map__name(m), -errno);
    }
    first = false;
    key = next;
    if (bpf_map_lookup_elem(fd, key.data(), vals.data())) {
      if (errno == ENOENT) continue;  // deleted meanwhile
      ThrowCode(env, "MP_ERR_MAP_READ", std::string("cannot read map ") + bpf_map__name(m), -errno);
    }
    Napi::Uint8Array k = Napi::Uint8Array::New(env, ksize);
    memcpy(k.Data(), key.data(), ksize);
    Napi::BigUint64Array v = Napi::BigUint64Array::New(env, words);
    for (size_t w = 0; w < words; w++) {
      uint64_t sum = 0;
      for (int c = 0; c < ncpu; c++) sum += vals[static_cast<size_t>(c) * words + w];
      v[w] = sum;
    }
    Napi::Array pair = Napi::Array::New(env, 2);
    pair.Set(0u, k);
    pair.Set(1u, v);
    out.Set(n++, pair);
  }
  return out;
}

// mapLookupAndDelete(map, key: Uint8Array): removes one key of a per-CPU hash
// whose value is a run of u64 words and returns its value, each word summed
// over the possible CPUs (as readPercpuHash), or null when the key is not in
// the map. One BPF_MAP_LOOKUP_AND_DELETE_ELEM where the kernel has it for
// hash maps (5.14+): no increment is lost. Older kernels refuse it for hash
// maps (ENOTSUPP / EOPNOTSUPP / EINVAL): then a lookup, then a delete, and
// increments made between the two are lost (a window of microseconds, on a
// key its caller removes because it stayed idle for the whole idle period).
Napi::Value BpfObject::MapLookupAndDelete(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  const char *usage = "mapLookupAndDelete(map: string, key: Uint8Array)";
  bpf_map *m = RequireMap(env, StringArg(info, 0, usage));
  if (info.Length() < 2 || !info[1].IsTypedArray() ||
      info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    ThrowCode(env, "MP_ERR_ARG", usage);
  Napi::Uint8Array key = info[1].As<Napi::Uint8Array>();
  int fd = bpf_map__fd(m);
  if (fd < 0) ThrowCode(env, "MP_ERR_STATE", std::string("map ") + bpf_map__name(m) + " is not loaded", fd);
  uint32_t vsize = bpf_map__value_size(m);
  if (key.ByteLength() != bpf_map__key_size(m))
    ThrowCode(env, "MP_ERR_ARG", std::string("mapLookupAndDelete: wrong key size for ") + bpf_map__name(m));
  if (vsize % 8 != 0)
    ThrowCode(env, "MP_ERR_ARG",
              std::string("mapLookupAndDelete: value of ") + bpf_map__name(m) + " is not a run of u64");
  int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) ThrowCode(env, "MP_ERR_SYS", "cannot count CPUs", ncpu);
  size_t words = vsize / 8;
  std::vector<uint64_t> vals(words * static_cast<size_t>(ncpu));
  bool found = true;
  if (!lookup_delete_split_) {
    if (bpf_map_lookup_and_delete_elem(fd, key.Data(), vals.data())) {
      if (errno == ENOENT)
        found = false;
      else if (errno == kKernelEnotsupp || errno == EOPNOTSUPP || errno == EINVAL)
        lookup_delete_split_ = true;  // before 5.14: not for hash maps
      else
        ThrowCode(env, "MP_ERR_MAP_DELETE", std::string("cannot take a key out of map ") + bpf_map__name(m), -errno);
    }
  }
  if (found && lookup_delete_split_) {
    if (bpf_map_lookup_elem(fd, key.Data(), vals.data())) {
      if (errno != ENOENT)
        ThrowCode(env, "MP_ERR_MAP_READ", std::string("cannot read map ") + bpf_map__name(m), -errno);
      found = false;
    } else if (bpf_map_delete_elem(fd, key.Data()) && errno != ENOENT) {
      ThrowCode(env, "MP_ERR_MAP_DELETE", std::string("cannot delete from map ") + bpf_map__name(m), -errno);
    }
  }
  if (!found) return env.Null();
  Napi::BigUint64Array v = Napi::BigUint64Array::New(env, words);
  for (size_t w = 0; w < words; w++) {
    uint64_t sum = 0;
    for (int c = 0; c < ncpu; c++) sum += vals[static_cast<size_t>(c) * words + w];
    v[w] = sum;
  }
  return v;
}

// testRun(program, cpu): runs a loaded raw_tp program once on that CPU
// (BPF_PROG_TEST_RUN with BPF_F_TEST_RUN_ON_CPU); returns its return value.
Napi::Value BpfObject::TestRun(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  const char *usage = "testRun(program, cpu)";
  std::string name = StringArg(info, 0, usage);
  uint32_t cpu = UintArg(info, 1, usage);
  bpf_program *p = RequireProgram(env, name);
  int fd = bpf_program__fd(p);
  if (fd < 0) ThrowCode(env, "MP_ERR_STATE", name + " is not loaded", fd);
  uint64_t args[1] = {0};
  LIBBPF_OPTS(bpf_test_run_opts, opts, .ctx_in = args, .ctx_size_in = sizeof args, .flags = BPF_F_TEST_RUN_ON_CPU,
              .cpu = cpu);
  int err = bpf_prog_test_run_opts(fd, &opts);
  if (err) ThrowCode(env, "MP_ERR_TEST_RUN", "cannot run " + name, -errno);
  return Napi::Number::New(env, opts.retval);
}

Napi::Value BpfObject::Close(const Napi::CallbackInfo &info) {
  Destroy();
  return info.Env().Undefined();
}

}  // namespace meshprobe
