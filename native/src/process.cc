#include "process.h"

#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>

#include "errors.h"

namespace meshprobe {

Napi::Value SetParentDeathSignal(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  const char *usage = "setParentDeathSignal(signal: number 1-64, expectedParent: number)";
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) ThrowCode(env, "MP_ERR_ARG", usage);
  int sig = info[0].As<Napi::Number>().Int32Value();
  int64_t expected = info[1].As<Napi::Number>().Int64Value();
  if (sig < 1 || sig > 64) ThrowCode(env, "MP_ERR_ARG", usage);
  if (prctl(PR_SET_PDEATHSIG, sig) != 0) ThrowCode(env, "MP_ERR_PRCTL", "prctl(PR_SET_PDEATHSIG)", -errno);
  // the parent may have died between our start and the prctl: then we were re-parented already
  pid_t parent = getppid();
  Napi::Object out = Napi::Object::New(env);
  out.Set("parent", Napi::Number::New(env, parent));
  out.Set("alive", Napi::Boolean::New(env, parent == expected));
  return out;
}

}  // namespace meshprobe
