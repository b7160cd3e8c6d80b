// Which OpenBLAS kernels the executables run on (kernels/cpu/openblas_core.h): the user's
// OPENBLAS_CORETYPE wins, else SkylakeX on an AVX-512 CPU, decided before OpenBLAS loads.
#include <catch2/catch_test_macros.hpp>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "kernels/cpu/openblas_core.h"
#include "run_support.h"

using namespace tg;

namespace {
std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// runtime.openblas_core of a 1-step run of the tapegrok binary started with `env` prepended.
std::string core_of_cli_run(const std::string& env, const std::string& name) {
  const std::string dir = tgtest::fresh_temp_dir(name);
  const std::string cmd = env + " " + TAPEGROK_BINARY + " train --task a+b --modulus 11 --width 16 --heads 2 " +
                          "--layers 1 --batch-size 8 --steps 1 --no-progress --run-dir " + dir + "/run > /dev/null 2>&1";
  REQUIRE(std::system(cmd.c_str()) == 0);
  std::ifstream in(dir + "/run/config.json");
  return nlohmann::json::parse(in).at("runtime").at("openblas_core").get<std::string>();
}
}  // namespace

TEST_CASE("this test binary runs the OpenBLAS kernels the rule picks", "[cpu][openblas]") {
  const char* user = std::getenv("OPENBLAS_CORETYPE");
  const char* preferred = cpu::preferred_openblas_core();
  if (user != nullptr && *user != '\0') {
    CHECK(lower(cpu::openblas_core()) == lower(user));
  } else if (preferred != nullptr) {
    CHECK(lower(cpu::openblas_core()) == lower(preferred));
  } else {
    SUCCEED("no AVX-512 here: OpenBLAS's own choice stands");
  }
}

TEST_CASE("the CLI records its OpenBLAS kernels and respects OPENBLAS_CORETYPE", "[cpu][openblas][cli]") {
  CHECK(core_of_cli_run("env OPENBLAS_CORETYPE=Haswell", "core-haswell") == "Haswell");
  const char* preferred = cpu::preferred_openblas_core();
  const std::string chosen = core_of_cli_run("env -u OPENBLAS_CORETYPE", "core-auto");
  if (preferred != nullptr) CHECK(lower(chosen) == lower(preferred));
}
