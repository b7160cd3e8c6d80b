// Linked into every tapegrok executable (tapegrok_link_device), never into a shared library. The
// dynamic loader runs an executable's .preinit_array before any shared library's constructor, but C
// library start-up resets the environment after it, so a setenv here would be lost: when the settings
// of kernels/cpu/openblas_core.h are missing from the environment, the program re-executes itself once
// with them added (the second start finds them set and goes on). Then it sets the CPU kernels'
// floating-point mode (kernels/cpu/float_mode.h) on the main thread, so that OpenBLAS's worker threads,
// which its constructor starts, inherit it.
#include <unistd.h>

#include <cstring>

#include "kernels/cpu/float_mode.h"
#include "kernels/cpu/openblas_core.h"

namespace {

bool is_set(char** envp, const char* prefix) {  // prefix: "NAME="
  const std::size_t n = std::strlen(prefix);
  for (char** e = envp; *e != nullptr; ++e) {
    if (std::strncmp(*e, prefix, n) == 0 && (*e)[n] != '\0') return true;
  }
  return false;
}

bool is(char** envp, const char* setting) {  // setting: "NAME=value"
  for (char** e = envp; *e != nullptr; ++e) {
    if (std::strcmp(*e, setting) == 0) return true;
  }
  return false;
}

void set_float_mode(char** envp) {
  if (is(envp, "TAPEGROK_FLUSH_SUBNORMALS=0")) return;
  tg::cpu::set_float_control(tg::cpu::float_control() | tg::cpu::subnormal_flush_bits());
}

void choose_before_libraries_load(int, char** argv, char** envp) {
  set_float_mode(envp);
  std::size_t n = 0;
  while (envp[n] != nullptr) ++n;
  if (n > 4096) return;
  char* env[4099];  // the environment, up to two settings, the terminator: no allocation this early
  for (std::size_t i = 0; i < n; ++i) env[i] = envp[i];
  std::size_t added = 0;
  static char core[64] = "OPENBLAS_CORETYPE=", timeout[64] = "OPENBLAS_THREAD_TIMEOUT=";
  if (const char* preferred = tg::cpu::preferred_openblas_core(); preferred != nullptr && !is_set(envp, core)) {
    std::strncat(core, preferred, sizeof(core) - std::strlen(core) - 1);
    env[n + added++] = core;
  }
  if (!is_set(envp, timeout)) {
    std::strncat(timeout, tg::cpu::kOpenBlasThreadTimeout, sizeof(timeout) - std::strlen(timeout) - 1);
    env[n + added++] = timeout;
  }
  if (added == 0) return;
  env[n + added] = nullptr;
  ::execve("/proc/self/exe", argv, env);  // returns only on failure: go on with OpenBLAS's own choices
}

}  // namespace

__attribute__((section(".preinit_array"), used)) static void (*const tapegrok_choose_openblas_core)(int, char**,
                                                                                                   char**) =
    choose_before_libraries_load;
