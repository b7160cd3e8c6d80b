// Device memory allocation with a cache.
//
// A grokking run repeats the same step tens of thousands of times, so every step asks for the same
// buffer sizes. Returning freed blocks to a per-size free list and handing them out again makes
// allocation free after the first step (no cudaMalloc/cudaFree synchronisation on the GPU, no page
// faults from fresh mmap'd memory on the CPU). The GPU backend runs everything on one stream, so a
// block freed on the host may be reused by the next kernel: stream order keeps that safe.
//
// Capture pools (CUDA graphs, engine/captured_graph.h). A captured graph bakes the address of every
// temporary it used into its kernels, and every replay writes them again, so while the graph exists
// the memory it was captured with must belong to it alone:
//  - between begin_pool() and end_pool() (the capture) every allocation is served by a new pool: from
//    blocks freed earlier in the same capture first (the work that used them comes earlier in stream
//    order, in the capture and in every replay), else from the general cache or the device;
//  - a pool's blocks return to that pool when freed, during the capture or after it, never to the
//    general cache, and empty_cache() leaves them alone; a block allocated before the capture and
//    freed during it joins the pool too (a kernel of the graph may have used it);
//  - release_pool() (the graph is gone) hands the pool's free blocks to the general cache; its blocks
//    still in use go there when they are freed.
// Out of memory during a capture is an error at once: emptying the cache would synchronise the device,
// which a capture forbids.
//
// TAPEGROK_EXACT_ALLOC=1 (for memory checkers: compute-sanitizer, the emulated device under
// AddressSanitizer) turns the cache off: every allocation is a raw allocation of exactly the size asked
// for, freed when the block is freed (a capture pool's blocks when the pool is released), so a read past
// a buffer's end or of a stale block reaches the checker instead of another cached buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

namespace tg {

struct AllocatorStats {
  std::size_t bytes_in_use = 0;       // handed out and not yet returned
  std::size_t bytes_cached = 0;       // returned, held for reuse
  std::size_t bytes_in_pools = 0;     // returned to a capture pool, held for its graph
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
  using PoolId = std::uint64_t;  // 0: no pool

  CachingAllocator(std::string device_name, RawAlloc raw_alloc, RawFree raw_free);
  ~CachingAllocator() override;

  void* allocate(std::size_t nbytes) override;
  void deallocate(void* ptr, std::size_t nbytes) override;

  void empty_cache();  // gives every block of the general cache back to the device (pools keep theirs)
  AllocatorStats stats() const override { return stats_; }
  void reset_peak() override { stats_.peak_bytes_in_use = stats_.bytes_in_use; }

  // ---- capture pools (see the top of this file) ----
  PoolId begin_pool();              // routes allocations to a new pool; one capture at a time
  void end_pool();                  // allocations use the general cache again; the pool keeps its blocks
  void release_pool(PoolId pool);   // the pool's graph is gone: its blocks return to the general cache
  bool capturing() const { return active_pool_ != 0; }
  std::size_t pool_blocks(PoolId pool) const;  // blocks a pool owns, in use or free (for tests)

  static std::size_t round_size(std::size_t nbytes);  // the bucket a request falls in

 private:
  using FreeLists = std::map<std::size_t, std::vector<void*>>;  // rounded size -> free blocks
  void* take(FreeLists& lists, std::size_t size);               // a free block of `size`, or nullptr
  std::size_t block_size(std::size_t nbytes) const;             // what a request of nbytes occupies

  std::string device_name_;
  RawAlloc raw_alloc_;
  RawFree raw_free_;
  FreeLists free_blocks_;                          // the general cache
  std::map<PoolId, FreeLists> pools_;              // free blocks of each live pool
  std::unordered_map<void*, PoolId> pool_of_;      // every block a live pool owns, in use or free
  PoolId active_pool_ = 0, next_pool_ = 1;
  AllocatorStats stats_;
  bool exact_ = false;  // TAPEGROK_EXACT_ALLOC=1: no cache, exact sizes
};

}  // namespace tg
