#pragma once
#include <napi.h>

namespace meshprobe {
Napi::Value FentryCanAttach(const Napi::CallbackInfo &info);
Napi::Value AtomicsSupported(const Napi::CallbackInfo &info);
Napi::Value LibbpfVersion(const Napi::CallbackInfo &info);
Napi::Value PossibleCpus(const Napi::CallbackInfo &info);
Napi::Value SetDebug(const Napi::CallbackInfo &info);
}  // namespace meshprobe
