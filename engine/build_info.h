// Which source a binary was built from, so that a run (config.json's runtime.build) and `tapegrok
// --version` say it: results from two builds can differ in the last bits (docs/architecture.md,
// "Determinism"), and a sweep that spans sessions must not mix builds unknowingly.
#pragma once

namespace tg {

struct BuildInfo {
  const char* commit;  // the git commit (40 hex digits), or "unknown" when built outside a git checkout
  bool dirty;          // tracked files differed from that commit when it was built
};

// Defined in a source file the build writes (cmake/build_info.cmake).
const BuildInfo& build_info();

}  // namespace tg
