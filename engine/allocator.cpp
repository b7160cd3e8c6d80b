#include "engine/allocator.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <string_view>

#include "engine/error.h"

namespace tg {

CachingAllocator::CachingAllocator(std::string device_name, RawAlloc raw_alloc, RawFree raw_free)
    : device_name_(std::move(device_name)), raw_alloc_(raw_alloc), raw_free_(raw_free) {
  const char* exact = std::getenv("TAPEGROK_EXACT_ALLOC");
  exact_ = exact != nullptr && std::string_view(exact) == "1";
}

std::size_t CachingAllocator::block_size(std::size_t nbytes) const {
  return exact_ ? std::max<std::size_t>(nbytes, 1) : round_size(nbytes);
}

CachingAllocator::~CachingAllocator() {
  empty_cache();
  for (auto& [id, lists] : pools_) {
    for (auto& [size, blocks] : lists) {
      for (void* p : blocks) raw_free_(p);
    }
  }
}

std::size_t CachingAllocator::round_size(std::size_t nbytes) {
  // 512-byte granularity: exact reuse for the fixed sizes of a training step, little waste.
  constexpr std::size_t kGranule = 512;
  if (nbytes == 0) return kGranule;
  return (nbytes + kGranule - 1) / kGranule * kGranule;
}

void* CachingAllocator::take(FreeLists& lists, std::size_t size) {
  auto it = lists.find(size);
  if (it == lists.end() || it->second.empty()) return nullptr;
  void* ptr = it->second.back();
  it->second.pop_back();
  return ptr;
}

void* CachingAllocator::allocate(std::size_t nbytes) {
  const std::size_t size = block_size(nbytes);
  void* ptr = nullptr;
  if (active_pool_ != 0) {
    // A capture: the pool's own free blocks, then the general cache, then the device; never
    // empty_cache() (freeing device memory synchronises, which a capture forbids).
    if (!exact_ && (ptr = take(pools_[active_pool_], size)) != nullptr) {
      stats_.bytes_in_pools -= size;
    } else if (!exact_ && (ptr = take(free_blocks_, size)) != nullptr) {
      stats_.bytes_cached -= size;
    } else {
      ptr = raw_alloc_(size);
      if (ptr == nullptr) {
        throw Error(fmt::format(
            "out of memory on {} while capturing a CUDA graph: could not allocate {:.1f} MiB ({:.1f} MiB in use by "
            "tensors, {:.1f} MiB cached, {:.1f} MiB held for captured graphs; the cache cannot be emptied during a "
            "capture)",
            device_name_, size / 1048576.0, stats_.bytes_in_use / 1048576.0, stats_.bytes_cached / 1048576.0,
            stats_.bytes_in_pools / 1048576.0));
      }
      ++stats_.raw_allocations;
    }
    pool_of_[ptr] = active_pool_;
  } else if (!exact_ && (ptr = take(free_blocks_, size)) != nullptr) {
    stats_.bytes_cached -= size;
  } else {
    ptr = raw_alloc_(size);
    if (ptr == nullptr && stats_.bytes_cached > 0) {
      empty_cache();
      ptr = raw_alloc_(size);
    }
    if (ptr == nullptr) {
      throw Error(fmt::format(
          "out of memory on {}: could not allocate {:.1f} MiB ({:.1f} MiB already in use by tensors, {:.1f} MiB "
          "held for captured graphs)",
          device_name_, size / 1048576.0, stats_.bytes_in_use / 1048576.0, stats_.bytes_in_pools / 1048576.0));
    }
    ++stats_.raw_allocations;
  }
  stats_.bytes_in_use += size;
  if (stats_.bytes_in_use > stats_.peak_bytes_in_use) stats_.peak_bytes_in_use = stats_.bytes_in_use;
  return ptr;
}

void CachingAllocator::deallocate(void* ptr, std::size_t nbytes) {
  if (ptr == nullptr) return;
  const std::size_t size = block_size(nbytes);
  stats_.bytes_in_use -= size;
  if (!pool_of_.empty()) {
    auto it = pool_of_.find(ptr);
    if (it != pool_of_.end()) {
      pools_[it->second][size].push_back(ptr);
      stats_.bytes_in_pools += size;
      return;
    }
  }
  if (active_pool_ != 0) {
    // Allocated before the capture, freed during it: the graph may have used it, so it joins the pool.
    pool_of_[ptr] = active_pool_;
    pools_[active_pool_][size].push_back(ptr);
    stats_.bytes_in_pools += size;
    return;
  }
  if (exact_) {
    raw_free_(ptr);
    return;
  }
  free_blocks_[size].push_back(ptr);
  stats_.bytes_cached += size;
}

void CachingAllocator::empty_cache() {
  for (auto& [size, blocks] : free_blocks_) {
    for (void* p : blocks) raw_free_(p);
  }
  free_blocks_.clear();
  stats_.bytes_cached = 0;
}

CachingAllocator::PoolId CachingAllocator::begin_pool() {
  TG_CHECK(active_pool_ == 0, "allocator {}: a capture pool is already active (one graph capture at a time)",
           device_name_);
  active_pool_ = next_pool_++;
  pools_[active_pool_];
  return active_pool_;
}

void CachingAllocator::end_pool() { active_pool_ = 0; }

void CachingAllocator::release_pool(PoolId pool) {
  if (pool == active_pool_) active_pool_ = 0;
  auto it = pools_.find(pool);
  if (it == pools_.end()) return;
  for (auto& [size, blocks] : it->second) {
    for (void* p : blocks) {
      stats_.bytes_in_pools -= size;
      if (exact_) {
        raw_free_(p);
        continue;
      }
      free_blocks_[size].push_back(p);
      stats_.bytes_cached += size;
    }
  }
  pools_.erase(it);
  std::erase_if(pool_of_, [pool](const auto& entry) { return entry.second == pool; });
}

std::size_t CachingAllocator::pool_blocks(PoolId pool) const {
  std::size_t n = 0;
  for (const auto& [ptr, owner] : pool_of_) n += owner == pool;
  return n;
}

}  // namespace tg
