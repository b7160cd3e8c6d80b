// op_cases.h promises that every op of engine/ops.h has a case. This test keeps the promise: it reads
// engine/ops.h as it is now, collects the functions it declares at namespace scope, and fails for any
// that neither op_cases() nor forward_cases() checks and that is not listed below as no op.
#include <catch2/catch_test_macros.hpp>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "op_cases.h"

using namespace tgtest;

namespace {

// Declared in engine/ops.h but not ops, each with the reason.
const std::set<std::string> kNotOps = {
    "operator+", "operator-", "operator*", "operator/",  // sugar for add, sub, mul, div, neg and scale
    "ids_checked_on_host",                               // IdsCheckedGuard's flag
    "matmul_flops_dispatched",                           // a counter for benchmarks
};

// The names of the functions engine/ops.h declares: lines that start (unindented, as at namespace scope in
// that file) with a return type, then a name and "(". Comments are dropped first.
std::set<std::string> declared_functions(const std::string& path) {
  std::ifstream in(path);
  REQUIRE(in.good());
  static const std::regex declaration(R"(^(?:inline\s+)?[A-Za-z_][\w:<>]*\s*[&*]?\s+(operator[^\s(]+|[A-Za-z_]\w*)\s*\()");
  std::set<std::string> names;
  std::string line;
  while (std::getline(in, line)) {
    line = line.substr(0, line.find("//"));
    std::smatch m;
    if (std::regex_search(line, m, declaration) && m[1] != "return") names.insert(m[1]);
  }
  return names;
}

std::set<std::string> covered_ops() {
  std::set<std::string> ops;
  for (const OpCase& c : op_cases()) ops.insert(c.ops.begin(), c.ops.end());
  for (const ForwardCase& c : forward_cases()) ops.insert(c.ops.begin(), c.ops.end());
  return ops;
}

}  // namespace

TEST_CASE("every op engine/ops.h declares has a case in op_cases.h", "[ops][coverage]") {
  const std::set<std::string> declared = declared_functions(TAPEGROK_SOURCE_DIR "/engine/ops.h");
  // The reading itself works: ops from several sections of the header are found.
  for (const char* op : {"matmul", "add", "sum", "cross_entropy", "layernorm", "reshape", "add_layernorm"}) {
    CAPTURE(op);
    CHECK(declared.count(op) == 1);
  }
  const std::set<std::string> covered = covered_ops();
  for (const std::string& name : declared) {
    CAPTURE(name);
    CHECK((covered.count(name) == 1 || kNotOps.count(name) == 1));
  }
  // An entry of kNotOps that engine/ops.h no longer declares is stale.
  for (const std::string& name : kNotOps) {
    CAPTURE(name);
    CHECK(declared.count(name) == 1);
  }
}
