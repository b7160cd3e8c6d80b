// Where a tensor's memory lives. Moving data between devices is always an explicit copy
// (Tensor::to); no op mixes devices.
#pragma once

#include <string>

namespace tg {

enum class DeviceType { cpu, cuda };

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;

  static Device cpu() { return {DeviceType::cpu, 0}; }
  static Device cuda(int index = 0) { return {DeviceType::cuda, index}; }

  bool is_cpu() const { return type == DeviceType::cpu; }
  bool is_cuda() const { return type == DeviceType::cuda; }
  bool operator==(const Device&) const = default;

  std::string str() const;  // "cpu", "cuda:0"
};

// True when this build has the CUDA backend and the CUDA runtime reports at least one GPU.
// Never throws: any failure of cudaGetDeviceCount (no driver, stub library, ...) means "no GPU".
bool cuda_is_available();

// Why cuda_is_available() is false, for error messages ("" when a GPU is available).
std::string cuda_unavailable_reason();

// Parses "cpu", "cuda", "cuda:N" or "auto" (the GPU when one is available, else the CPU).
// Throws tg::Error naming the bad string.
Device parse_device(const std::string& text);

}  // namespace tg
