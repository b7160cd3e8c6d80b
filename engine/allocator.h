// Device memory allocation with a cache.
//
// A grokking run repeats the same step tens of thousands of times, so every step asks for the same
// buffer sizes. Returning freed blocks to a per-size free list and handing them out again makes
// allocation free after the first step (no cudaMalloc/cudaFree synchronisation on the GPU, no page
// faults from fresh mmap'd memory on the CPU). The GPU backend runs everything on one stream, so a
// block freed on the host may be reused by the next kernel: stream order keeps that safe.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <vector>

namespace tg {

struct AllocatorStats {
  std::size_t bytes_in_use = 0;       // handed out and not yet returned
  std::size_t bytes_cached = 0;       // returned, held for reuse
  std::size_t peak_bytes_in_use = 0;
  std::size_t raw_allocations = 0;    // calls that reached the underlying allocator
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  // Returns memory of at least nbytes bytes (nbytes may be 0), aligned to 256 bytes, or throws tg::Error.
  virtual void* allocate(std::size_t nbytes) = 0;
  virtual void deallocate(void* ptr, std::size_t nbytes) = 0;
  virtual AllocatorStats stats() const = 0;
  virtual void reset_peak() = 0;  // peak_bytes_in_use restarts from the bytes in use now
};

class CachingAllocator final : public Allocator {
 public:
  // raw_alloc returns nullptr when the device is out of memory; the cache is then emptied and the
  // request retried once before an error names the device, the size and the memory in use.
  using RawAlloc = void* (*)(std::size_t nbytes);
  using RawFree = void (*)(void* ptr);

  CachingAllocator(std::string device_name, RawAlloc raw_alloc, RawFree raw_free);
  ~CachingAllocator() override;

  void* allocate(std::size_t nbytes) override;
  void deallocate(void* ptr, std::size_t nbytes) override;

  void empty_cache();  // gives every cached block back to the device
  AllocatorStats stats() const override { return stats_; }
  void reset_peak() override { stats_.peak_bytes_in_use = stats_.bytes_in_use; }

  static std::size_t round_size(std::size_t nbytes);  // the bucket a request falls in

 private:
  std::string device_name_;
  RawAlloc raw_alloc_;
  RawFree raw_free_;
  std::map<std::size_t, std::vector<void*>> free_blocks_;  // rounded size -> cached blocks
  AllocatorStats stats_;
};

}  // namespace tg
