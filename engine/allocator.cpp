#include "engine/allocator.h"

#include <fmt/format.h>

#include "engine/error.h"

namespace tg {

CachingAllocator::CachingAllocator(std::string device_name, RawAlloc raw_alloc, RawFree raw_free)
    : device_name_(std::move(device_name)), raw_alloc_(raw_alloc), raw_free_(raw_free) {}

CachingAllocator::~CachingAllocator() { empty_cache(); }

std::size_t CachingAllocator::round_size(std::size_t nbytes) {
  // 512-byte granularity: exact reuse for the fixed sizes of a training step, little waste.
  constexpr std::size_t kGranule = 512;
  if (nbytes == 0) return kGranule;
  return (nbytes + kGranule - 1) / kGranule * kGranule;
}

void* CachingAllocator::allocate(std::size_t nbytes) {
  const std::size_t size = round_size(nbytes);
  auto it = free_blocks_.find(size);
  void* ptr = nullptr;
  if (it != free_blocks_.end() && !it->second.empty()) {
    ptr = it->second.back();
    it->second.pop_back();
    stats_.bytes_cached -= size;
  } else {
    ptr = raw_alloc_(size);
    if (ptr == nullptr && stats_.bytes_cached > 0) {
      empty_cache();
      ptr = raw_alloc_(size);
    }
    if (ptr == nullptr) {
      throw Error(fmt::format(
          "out of memory on {}: could not allocate {:.1f} MiB ({:.1f} MiB already in use by tensors)",
          device_name_, size / 1048576.0, stats_.bytes_in_use / 1048576.0));
    }
    ++stats_.raw_allocations;
  }
  stats_.bytes_in_use += size;
  if (stats_.bytes_in_use > stats_.peak_bytes_in_use) stats_.peak_bytes_in_use = stats_.bytes_in_use;
  return ptr;
}

void CachingAllocator::deallocate(void* ptr, std::size_t nbytes) {
  if (ptr == nullptr) return;
  const std::size_t size = round_size(nbytes);
  free_blocks_[size].push_back(ptr);
  stats_.bytes_in_use -= size;
  stats_.bytes_cached += size;
}

void CachingAllocator::empty_cache() {
  for (auto& [size, blocks] : free_blocks_) {
    for (void* p : blocks) raw_free_(p);
  }
  free_blocks_.clear();
  stats_.bytes_cached = 0;
}

}  // namespace tg
