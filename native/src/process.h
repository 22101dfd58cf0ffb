// The probe's own process: ending with the command that started it.
#pragma once
#include <napi.h>

namespace meshprobe {
// setParentDeathSignal(signal, expectedParent): prctl(PR_SET_PDEATHSIG, signal), so the kernel
// sends `signal` when the parent exits; returns the parent now, and whether it is still
// `expectedParent` (if not, the parent died before the call and no signal will come).
Napi::Value SetParentDeathSignal(const Napi::CallbackInfo &info);
}  // namespace meshprobe
