#include "errors.h"

#include <bpf/libbpf.h>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>

namespace meshprobe {

namespace {
thread_local std::string g_log;  // libbpf prints on the thread that called it
bool g_debug = false;
constexpr size_t kLogKeep = 4096;

int LibbpfPrint(enum libbpf_print_level level, const char *fmt, va_list args) {
  if (level == LIBBPF_DEBUG && !g_debug) return 0;
  char buf[1024];
  int n = vsnprintf(buf, sizeof buf, fmt, args);
  if (n < 0) return n;
  if (g_debug) fprintf(stderr, "libbpf: %s", buf);
  g_log.append(buf);
  if (g_log.size() > kLogKeep) g_log.erase(0, g_log.size() - kLogKeep);
  return n;
}
}  // namespace

void InstallLibbpfLog() {
  static std::once_flag once;
  std::call_once(once, [] { libbpf_set_print(LibbpfPrint); });
}

void SetLibbpfDebug(bool on) { g_debug = on; }

std::string TakeLibbpfLog() {
  std::string out;
  out.swap(g_log);
  return out;
}

void ThrowCode(Napi::Env env, const char *code, const std::string &message, int err) {
  std::string msg = message;
  if (err != 0) {
    int e = err < 0 ? -err : err;
    msg += ": ";
    msg += strerror(e);
  }
  std::string log = TakeLibbpfLog();
  // keep the last lines of libbpf's log: the verifier's verdict is at the end
  while (!log.empty() && (log.back() == '\n' || log.back() == ' ')) log.pop_back();
  Napi::Error error = Napi::Error::New(env, msg);
  error.Set("code", Napi::String::New(env, code));
  if (err != 0) error.Set("errno", Napi::Number::New(env, err < 0 ? -err : err));
  if (!log.empty()) error.Set("libbpfLog", Napi::String::New(env, log));
  throw error;
}

}  // namespace meshprobe
