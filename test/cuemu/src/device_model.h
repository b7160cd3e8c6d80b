// The device cuemu pretends to be: an sm_90 GPU (H100 / H200), and the launches it refuses.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <string>

namespace cuemu::device {

constexpr int kComputeMajor = 9, kComputeMinor = 0;
constexpr int kMultiprocessors = 132;
constexpr int kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxBlockX = 1024, kMaxBlockY = 1024, kMaxBlockZ = 64;
constexpr unsigned kMaxGridX = 0x7fffffffu, kMaxGridY = 65535, kMaxGridZ = 65535;
constexpr std::size_t kMaxStaticSmem = 48 * 1024;   // static __shared__ per block
constexpr std::size_t kDefaultDynamicSmem = 48 * 1024;  // dynamic, until cudaFuncSetAttribute raises it
constexpr std::size_t kMaxOptinSmem = 232448;       // 227 KiB: static + dynamic per block, opted in
constexpr std::size_t kMemoryBytes = std::size_t(141) << 30;  // an H200's; CUEMU_MEMORY_MIB lowers it

// The dynamic shared-memory limit cudaFuncSetAttribute set for `kernel` (the default otherwise).
std::size_t dynamic_smem_limit(const void* kernel);
void set_dynamic_smem_limit(const void* kernel, std::size_t bytes);

// Why a GPU would refuse this launch ("" when it would not).
std::string refuse_launch(const void* kernel, const cuemu::LaunchConfig& cfg);
// The error such a launch leaves for cudaGetLastError.
cudaError_t launch_error(const cuemu::LaunchConfig& cfg);

}  // namespace cuemu::device
