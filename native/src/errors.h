// Errors thrown to JavaScript carry a stable `code` (MP_*) and, where libbpf
// said something, the tail of libbpf's own log.
#pragma once
#include <napi.h>
#include <string>

namespace meshprobe {

// Installs the libbpf print callback (once per process).
void InstallLibbpfLog();
// Clears and returns what libbpf printed on this thread since the last call.
std::string TakeLibbpfLog();
// Sets the verbosity: 0 = warnings only (kept for errors), 1 = also debug.
void SetLibbpfDebug(bool on);

// Throws Error(message + ": " + strerror(-err) [+ libbpf log]) with .code and .errno.
[[noreturn]] void ThrowCode(Napi::Env env, const char *code, const std::string &message, int err = 0);

}  // namespace meshprobe
