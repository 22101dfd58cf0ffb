#include "perf_reader.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "errors.h"

namespace meshprobe {

namespace {
// libbpf wants an event callback; we never let it consume, so it never runs.
bpf_perf_event_ret IgnoreEvent(void *, int, perf_event_header *) { return LIBBPF_PERF_EVENT_CONT; }
constexpr int kIdleWakeMs = 100;  // records below the watermark wait at most this long
}  // namespace

Napi::Function PerfReader::Define(Napi::Env env) {
  return DefineClass(env, "PerfReader",
                     {
                         InstanceMethod<&PerfReader::Start>("start"),
                         InstanceMethod<&PerfReader::Drain>("drain"),
                         InstanceMethod<&PerfReader::Backlog>("backlog"),
                         InstanceMethod<&PerfReader::Close>("close"),
                     });
}

// new PerfReader(mapFd, cpus[], pagesPerCpu, wakeupBytes)
PerfReader::PerfReader(const Napi::CallbackInfo &info) : Napi::ObjectWrap<PerfReader>(info), env_(info.Env()) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsNumber() || !info[1].IsArray() || !info[2].IsNumber() || !info[3].IsNumber())
    ThrowCode(env, "MP_ERR_ARG", "PerfReader(mapFd, cpus, pagesPerCpu, wakeupBytes)");
  int map_fd = info[0].As<Napi::Number>().Int32Value();
  Napi::Array cpus_js = info[1].As<Napi::Array>();
  size_t pages = info[2].As<Napi::Number>().Uint32Value();
  uint32_t wakeup = info[3].As<Napi::Number>().Uint32Value();
  if (pages == 0 || (pages & (pages - 1)) != 0) ThrowCode(env, "MP_ERR_ARG", "pagesPerCpu must be a power of two");
  std::vector<int> cpus(cpus_js.Length());
  for (uint32_t i = 0; i < cpus_js.Length(); i++) cpus[i] = cpus_js.Get(i).As<Napi::Number>().Int32Value();
  if (cpus.empty()) ThrowCode(env, "MP_ERR_ARG", "PerfReader needs at least one CPU");

  perf_event_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.size = sizeof attr;
  attr.type = PERF_TYPE_SOFTWARE;
  attr.config = PERF_COUNT_SW_BPF_OUTPUT;
  attr.sample_type = PERF_SAMPLE_RAW;
  attr.sample_period = 1;
  if (wakeup > 0) {
    attr.watermark = 1;
    attr.wakeup_watermark = wakeup;
  } else {
    attr.wakeup_events = 1;
  }
  perf_buffer_raw_opts opts;
  memset(&opts, 0, sizeof opts);
  opts.sz = sizeof opts;
  opts.cpu_cnt = static_cast<int>(cpus.size());
  opts.cpus = cpus.data();
  opts.map_keys = cpus.data();
  TakeLibbpfLog();
  pb_ = perf_buffer__new_raw(map_fd, pages, &attr, IgnoreEvent, nullptr, &opts);
  int err = libbpf_get_error(pb_);
  if (err) {
    pb_ = nullptr;
    ThrowCode(env, "MP_ERR_PERF_OPEN", "cannot open the perf rings", err);
  }
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (epoll_fd_ < 0 || stop_fd_ < 0) {
    int e = errno;
    Stop();
    ThrowCode(env, "MP_ERR_SYS", "epoll/eventfd", -e);
  }
  epoll_event ev;
  memset(&ev, 0, sizeof ev);
  ev.events = EPOLLIN;
  ev.data.u32 = UINT32_MAX;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, stop_fd_, &ev);
  size_t n = perf_buffer__buffer_cnt(pb_);
  for (size_t i = 0; i < n; i++) {
    void *base = nullptr;
    size_t size = 0;
    err = perf_buffer__buffer(pb_, static_cast<int>(i), &base, &size);
    if (err) {
      Stop();
      ThrowCode(env, "MP_ERR_PERF_OPEN", "cannot map perf ring", err);
    }
    auto *hdr = static_cast<perf_event_mmap_page *>(base);
    rings_.push_back(Ring{hdr, static_cast<uint8_t *>(base) + hdr->data_offset, hdr->data_size, cpus[i]});
    ev.data.u32 = static_cast<uint32_t>(i);
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, perf_buffer__buffer_fd(pb_, i), &ev) < 0) {
      int e = errno;
      Stop();
      ThrowCode(env, "MP_ERR_SYS", "epoll_ctl", -e);
    }
  }
  napi_add_env_cleanup_hook(env, CleanupHook, this);
  hooked_ = true;
}

PerfReader::~PerfReader() {
  Stop();
  if (hooked_) napi_remove_env_cleanup_hook(env_, CleanupHook, this);
}

void PerfReader::CleanupHook(void *arg) {
  auto *self = static_cast<PerfReader *>(arg);
  self->hooked_ = false;
  self->Stop();
}

// start(onData): the native thread begins waiting; onData() runs on this
// thread's event loop whenever records are waiting and no call is pending.
Napi::Value PerfReader::Start(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!pb_) ThrowCode(env, "MP_ERR_CLOSED", "PerfReader is closed");
  if (thread_.joinable()) ThrowCode(env, "MP_ERR_STATE", "PerfReader already started");
  if (info.Length() < 1 || !info[0].IsFunction()) ThrowCode(env, "MP_ERR_ARG", "start(onData)");
  tsfn_ = Napi::ThreadSafeFunction::New(env, info[0].As<Napi::Function>(), "meshprobe-perf", 0, 1);
  thread_ = std::thread([this] { WaitLoop(); });
  return env.Undefined();
}

bool PerfReader::AnyData() const {
  for (const Ring &r : rings_)
    if (__atomic_load_n(&r.hdr->data_head, __ATOMIC_ACQUIRE) != r.hdr->data_tail) return true;
  return false;
}

void PerfReader::WaitLoop() {
  epoll_event evs[16];
  while (!stopping_.load()) {
    int n = epoll_wait(epoll_fd_, evs, 16, kIdleWakeMs);
    if (n < 0 && errno != EINTR) break;
    if (stopping_.load()) break;
    if (!AnyData()) continue;
    pending_.store(true);
    if (tsfn_.NonBlockingCall() != napi_ok) break;
    // wait until the worker has drained (or we stop): no busy loop while it works
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return !pending_.load() || stopping_.load(); });
  }
}

size_t PerfReader::DrainRing(Ring &r, uint8_t *dst, size_t cap) {
  uint64_t head = __atomic_load_n(&r.hdr->data_head, __ATOMIC_ACQUIRE);
  uint64_t tail = r.hdr->data_tail;
  uint64_t avail = head - tail;
  if (avail == 0) return 0;
  uint64_t take = avail;
  if (take > cap) {  // stop at the last whole record that fits
    take = 0;
    while (take < avail) {
      auto *h = reinterpret_cast<perf_event_header *>(r.data + ((tail + take) & (r.size - 1)));
      if (h->size == 0 || take + h->size > cap) break;
      take += h->size;
    }
    if (take == 0) return 0;
  }
  uint64_t off = tail & (r.size - 1);
  uint64_t first = r.size - off < take ? r.size - off : take;
  memcpy(dst, r.data + off, first);
  if (take > first) memcpy(dst + first, r.data, take - first);
  __atomic_store_n(&r.hdr->data_tail, tail + take, __ATOMIC_RELEASE);
  return take;
}

// drain(dest: Uint8Array): bytes of whole perf records copied into dest
Napi::Value PerfReader::Drain(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!pb_) ThrowCode(env, "MP_ERR_CLOSED", "PerfReader is closed");
  if (info.Length() < 1 || !info[0].IsTypedArray()) ThrowCode(env, "MP_ERR_ARG", "drain(dest: Uint8Array)");
  Napi::Uint8Array dest = info[0].As<Napi::Uint8Array>();
  uint8_t *dst = dest.Data();
  size_t cap = dest.ByteLength();
  size_t total = 0;
  for (size_t i = 0; i < rings_.size() && total < cap; i++) {
    Ring &r = rings_[(next_ring_ + i) % rings_.size()];
    total += DrainRing(r, dst + total, cap - total);
  }
  if (total == 0) {
    // the rings are empty: let the waiting thread look for more (what arrives
    // from now on gets a new call; the idle timeout catches anything below
    // the wakeup watermark)
    {
      std::lock_guard<std::mutex> lock(mu_);
      pending_.store(false);
    }
    cv_.notify_one();
  }
  next_ring_ = (next_ring_ + 1) % rings_.size();
  return Napi::Number::New(env, static_cast<double>(total));
}

// backlog(): bytes waiting in the rings
Napi::Value PerfReader::Backlog(const Napi::CallbackInfo &info) {
  double total = 0;
  for (const Ring &r : rings_)
    total += static_cast<double>(__atomic_load_n(&r.hdr->data_head, __ATOMIC_ACQUIRE) - r.hdr->data_tail);
  return Napi::Number::New(info.Env(), total);
}

void PerfReader::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);  // so the waiting thread cannot miss it
    stopping_.store(true);
  }
  if (stop_fd_ >= 0) {
    uint64_t one = 1;
    ssize_t w = write(stop_fd_, &one, sizeof one);
    (void)w;
  }
  cv_.notify_all();
  if (thread_.joinable()) {
    thread_.join();
    tsfn_.Release();
  }
  if (epoll_fd_ >= 0) close(epoll_fd_);
  if (stop_fd_ >= 0) close(stop_fd_);
  epoll_fd_ = stop_fd_ = -1;
  if (pb_) perf_buffer__free(pb_);
  pb_ = nullptr;
  rings_.clear();
}

Napi::Value PerfReader::Close(const Napi::CallbackInfo &info) {
  Stop();
  return info.Env().Undefined();
}

}  // namespace meshprobe
