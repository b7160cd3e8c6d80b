// Linked into every tapegrok executable (tapegrok_link_device), never into a shared library. The
// dynamic loader runs an executable's .preinit_array before any shared library's constructor, but C
// library start-up resets the environment after it, so a setenv here would be lost: when the rule of
// kernels/cpu/openblas_core.h wants a core and OPENBLAS_CORETYPE is unset, the program re-executes
// itself once with the variable added (the second start finds it set and goes on).
#include <unistd.h>

#include <cstring>

#include "kernels/cpu/openblas_core.h"

namespace {

void choose_before_libraries_load(int, char** argv, char** envp) {
  constexpr const char* kName = "OPENBLAS_CORETYPE=";
  std::size_t n = 0;
  for (; envp[n] != nullptr; ++n) {
    if (std::strncmp(envp[n], kName, std::strlen(kName)) == 0 && envp[n][std::strlen(kName)] != '\0') return;
  }
  const char* core = tg::cpu::preferred_openblas_core();
  if (core == nullptr || n > 4096) return;
  char setting[64] = {};
  std::strcat(std::strcat(setting, kName), core);
  char* env[4098];  // the environment, the setting, the terminator: no allocation this early
  for (std::size_t i = 0; i < n; ++i) env[i] = envp[i];
  env[n] = setting;
  env[n + 1] = nullptr;
  ::execve("/proc/self/exe", argv, env);  // returns only on failure: go on with OpenBLAS's own choice
}

}  // namespace

__attribute__((section(".preinit_array"), used)) static void (*const tapegrok_choose_openblas_core)(int, char**,
                                                                                                   char**) =
    choose_before_libraries_load;
