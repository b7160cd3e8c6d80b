#include "test/cuemu/src/device_model.h"

#include <cstdio>
#include <map>
#include <mutex>

namespace cuemu::device {

namespace {
std::mutex limits_mu;
std::map<const void*, std::size_t>& limits() {
  static std::map<const void*, std::size_t> m;
  return m;
}
}  // namespace

std::size_t dynamic_smem_limit(const void* kernel) {
  std::lock_guard<std::mutex> g(limits_mu);
  const auto it = limits().find(kernel);
  return it == limits().end() ? kDefaultDynamicSmem : it->second;
}

void set_dynamic_smem_limit(const void* kernel, std::size_t bytes) {
  std::lock_guard<std::mutex> g(limits_mu);
  limits()[kernel] = bytes;
}

std::string refuse_launch(const void* kernel, const cuemu::LaunchConfig& cfg) {
  const dim3 b = cfg.block, g = cfg.grid;
  const long long threads = static_cast<long long>(b.x) * b.y * b.z;
  auto dims = [](dim3 d) {
    char text[48];
    std::snprintf(text, sizeof text, "(%u, %u, %u)", d.x, d.y, d.z);
    return std::string(text);
  };
  if (threads == 0) return "empty block " + dims(b);
  if (g.x == 0 || g.y == 0 || g.z == 0) return "empty grid " + dims(g);
  if (b.x > kMaxBlockX || b.y > kMaxBlockY || b.z > kMaxBlockZ || threads > kMaxThreadsPerBlock) {
    return "block " + dims(b) + " exceeds sm_90's limits (x, y <= 1024, z <= 64, at most 1024 threads)";
  }
  if (g.x > kMaxGridX || g.y > kMaxGridY || g.z > kMaxGridZ) {
    return "grid " + dims(g) + " exceeds sm_90's limits (x < 2^31, y, z <= 65535)";
  }
  const std::size_t limit = dynamic_smem_limit(kernel);
  if (cfg.dynamic_smem > limit) {
    return std::to_string(cfg.dynamic_smem) + " bytes of dynamic shared memory above the kernel's limit of " +
           std::to_string(limit) + (kernel ? "" : " (a kernel launched through a deduced template keeps the default)") +
           " (cudaFuncSetAttribute(MaxDynamicSharedMemorySize) raises it, up to " + std::to_string(kMaxOptinSmem) + ")";
  }
  return "";
}

cudaError_t launch_error(const cuemu::LaunchConfig& cfg) {
  const dim3 b = cfg.block, g = cfg.grid;
  const long long threads = static_cast<long long>(b.x) * b.y * b.z;
  if (threads == 0 || g.x == 0 || g.y == 0 || g.z == 0 || threads > kMaxThreadsPerBlock || b.x > kMaxBlockX ||
      b.y > kMaxBlockY || b.z > kMaxBlockZ || g.x > kMaxGridX || g.y > kMaxGridY || g.z > kMaxGridZ) {
    return cudaErrorInvalidConfiguration;
  }
  return cudaErrorInvalidValue;  // too much dynamic shared memory
}

}  // namespace cuemu::device
