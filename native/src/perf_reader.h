// PerfReader: one worker's share of the per-CPU perf rings.
//
// A native thread waits (epoll) for the rings and wakes the worker through a
// thread-safe function, once per batch. The worker then calls drain(dest),
// which copies whole raw perf records, unwrapped, from the rings into dest
// (a view of the shared WebAssembly.Memory) and releases the ring space.
// No JavaScript runs per event.
#pragma once
#include <bpf/libbpf.h>
#include <linux/perf_event.h>
#include <napi.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace meshprobe {

class PerfReader : public Napi::ObjectWrap<PerfReader> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit PerfReader(const Napi::CallbackInfo &info);
  ~PerfReader() override;

 private:
  struct Ring {
    perf_event_mmap_page *hdr;
    uint8_t *data;
    uint64_t size;  // power of two
    int cpu;
  };

  Napi::Value Start(const Napi::CallbackInfo &info);
  Napi::Value Drain(const Napi::CallbackInfo &info);
  Napi::Value Backlog(const Napi::CallbackInfo &info);
  Napi::Value Close(const Napi::CallbackInfo &info);

  void WaitLoop();
  bool AnyData() const;
  size_t DrainRing(Ring &r, uint8_t *dst, size_t cap);
  void Stop();
  static void CleanupHook(void *arg);

  perf_buffer *pb_ = nullptr;
  std::vector<Ring> rings_;
  size_t next_ring_ = 0;
  int epoll_fd_ = -1;
  int stop_fd_ = -1;
  std::thread thread_;
  Napi::ThreadSafeFunction tsfn_;
  std::atomic<bool> pending_{false};
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  Napi::Env env_;
  bool hooked_ = false;
};

}  // namespace meshprobe
