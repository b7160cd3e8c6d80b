// cuemu's SIMT scheduler: runs a grid on the calling OS thread, one block after another, each CUDA
// thread a fiber (Boost.Context: tens of nanoseconds a switch). A fiber runs until it reaches
// __syncthreads, a warp collective or its end; the scheduler then runs the next one, in the order
// CUEMU_ORDER asks for (forward, reverse, random:SEED), and releases a barrier once every thread of
// the block waits at it.
//
// What a GPU would only show by misbehaving is a report with file:line and an abort: divergent
// barriers, threads that exit while others wait, warp collectives with absent lanes or masks that
// disagree, deadlocks, launch configurations an sm_90 device refuses, host pointers given to a kernel.
// Shared memory is fresh and poisoned (0xFF bytes, NaN as float) for every block, in exact-size heap
// blocks so that AddressSanitizer sees overruns. Under ThreadSanitizer the fibers are annotated so
// that only barriers and warp collectives order the threads of a block: a shared-memory race is
// reported as a data race.
#include <cuda_runtime.h>

#include <boost/context/detail/fcontext.hpp>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "test/cuemu/src/device_model.h"
#include "test/cuemu/src/launch_log.h"
#include "test/cuemu/src/runtime_state.h"

// The thread variant builds this file without -fsanitize=thread but with CUEMU_TSAN: the scheduler's
// own bookkeeping, which every fiber touches, stays invisible to ThreadSanitizer, while the fibers
// are announced to it so that the kernels' accesses are ordered only by barriers and collectives.
#if defined(CUEMU_TSAN)
#include <sanitizer/tsan_interface.h>
#endif
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define CUEMU_ASAN 1
#endif

namespace bctx = boost::context::detail;

namespace cuemu {

ThreadState* current_thread = nullptr;
BlockState* current_block = nullptr;

namespace {

// ---------------------------------------------------------------- scheduling order
enum class Order { forward, reverse, random };
struct OrderPolicy {
  Order order = Order::forward;
  unsigned seed = 1;
};
const OrderPolicy& order_policy() {
  static const OrderPolicy policy = [] {
    OrderPolicy p;
    const char* env = std::getenv("CUEMU_ORDER");
    const std::string s = env ? env : "forward";
    if (s == "reverse") {
      p.order = Order::reverse;
    } else if (s.rfind("random", 0) == 0) {
      p.order = Order::random;
      if (s.size() > 7 && s[6] == ':') p.seed = static_cast<unsigned>(std::strtoul(s.c_str() + 7, nullptr, 10));
    } else if (s != "forward") {
      fail("CUEMU_ORDER='" + s + "': expected forward, reverse or random:SEED");
    }
    return p;
  }();
  return policy;
}
std::mt19937& order_rng() {
  static std::mt19937 rng(order_policy().seed);
  return rng;
}
void arrange(std::vector<int>& idx) {
  for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<int>(i);
  switch (order_policy().order) {
    case Order::forward: break;
    case Order::reverse: std::reverse(idx.begin(), idx.end()); break;
    case Order::random: std::shuffle(idx.begin(), idx.end(), order_rng()); break;
  }
}

// ---------------------------------------------------------------- fibers
enum class State { ready, barrier, warp, done };

struct Fiber {
  bctx::fcontext_t ctx = nullptr;
  char* stack = nullptr;  // lowest usable byte (a guard page lies below it)
  ThreadState ts;
  State state = State::ready;
  std::source_location at;  // where it waits
  unsigned barriers = 0;    // __syncthreads passed in this block
  bool started = false;     // has run in this block
#ifdef CUEMU_TSAN
  void* tsan = nullptr;
#endif
#ifdef CUEMU_ASAN
  void* fake_stack = nullptr;
#endif
};

// A warp collective in progress: lanes deposit, and each reads once every lane of the mask arrived.
struct Collective {
  bool open = false, complete = false;
  unsigned mask = 0, arrived = 0, departed = 0;
  Shuffle kind = Shuffle::index;
  bool is_sync = false;
  std::source_location at;
  std::uint64_t value[32] = {};
};

struct SharedObject {
  const void* key;
  void* bytes;
};

struct Block {
  std::vector<Fiber> fibers;
  std::vector<Collective> warps;
  std::vector<SharedObject> shared;
  std::size_t static_smem = 0, dynamic_smem = 0;
  void* dynamic = nullptr;
  BlockState state;
  void* params = nullptr;
  void (*body)(void*) = nullptr;
  const char* kernel = "";
  const LaunchSite* site = nullptr;
  Fiber* running = nullptr;
  bctx::fcontext_t scheduler = nullptr;
  unsigned long long events = 0;  // state changes: a pass without any is a deadlock
#ifdef CUEMU_TSAN
  void* tsan_scheduler = nullptr;
  char barrier_token[2] = {};
  char block_done = 0;
#endif
#ifdef CUEMU_ASAN
  void* scheduler_fake_stack = nullptr;
  const void* scheduler_stack = nullptr;
  std::size_t scheduler_stack_size = 0;
#endif
};
Block blk;  // the block running now (one host thread drives the device)

std::size_t stack_bytes() {
  static const std::size_t bytes = [] {
    const char* s = std::getenv("CUEMU_STACK_KIB");
    return (s ? std::strtoul(s, nullptr, 10) : 256) * 1024;
  }();
  return bytes;
}

std::string where_text(const std::source_location& l) {
  return std::string(l.file_name()) + ":" + std::to_string(l.line());
}
std::string block_text() {
  const uint3 b = blk.state.bid;
  return std::string(blk.kernel) + " (launched at " + blk.site->file + ":" + std::to_string(blk.site->line) +
         "), block (" + std::to_string(b.x) + "," + std::to_string(b.y) + "," + std::to_string(b.z) + ")";
}
[[noreturn]] void device_fail(const std::string& what) { fail(block_text() + ": " + what); }

// ---- switching (with the sanitizers told which stack is live)
void resume(Fiber& f) {
  blk.running = &f;
  current_thread = &f.ts;
#ifdef CUEMU_TSAN
  // First entry in a block: ordered after the launch. Later entries add no order between threads.
  __tsan_switch_to_fiber(f.tsan, f.started ? __tsan_switch_to_fiber_no_sync : 0);
#endif
#ifdef CUEMU_ASAN
  __sanitizer_start_switch_fiber(&blk.scheduler_fake_stack, f.stack, stack_bytes());
#endif
  f.started = true;
  const bctx::transfer_t t = bctx::jump_fcontext(f.ctx, &f);
#ifdef CUEMU_ASAN
  __sanitizer_finish_switch_fiber(blk.scheduler_fake_stack, nullptr, nullptr);
#endif
  f.ctx = t.fctx;
  blk.running = nullptr;
  current_thread = nullptr;
}

void yield_to_scheduler() {
  [[maybe_unused]] Fiber* f = blk.running;
#ifdef CUEMU_TSAN
  __tsan_switch_to_fiber(blk.tsan_scheduler, __tsan_switch_to_fiber_no_sync);
#endif
#ifdef CUEMU_ASAN
  __sanitizer_start_switch_fiber(&f->fake_stack, blk.scheduler_stack, blk.scheduler_stack_size);
#endif
  const bctx::transfer_t t = bctx::jump_fcontext(blk.scheduler, nullptr);
#ifdef CUEMU_ASAN
  __sanitizer_finish_switch_fiber(f->fake_stack, nullptr, nullptr);
#endif
  blk.scheduler = t.fctx;
}

void fiber_entry(bctx::transfer_t t) {
#ifdef CUEMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &blk.scheduler_stack, &blk.scheduler_stack_size);
#endif
  blk.scheduler = t.fctx;
  Fiber* f = static_cast<Fiber*>(t.data);
  blk.body(blk.params);
  f->state = State::done;
  ++blk.events;
#ifdef CUEMU_TSAN
  __tsan_release(&blk.block_done);  // the scheduler acquires it when the whole block is done
  __tsan_switch_to_fiber(blk.tsan_scheduler, __tsan_switch_to_fiber_no_sync);
#endif
#ifdef CUEMU_ASAN
  __sanitizer_start_switch_fiber(nullptr, blk.scheduler_stack, blk.scheduler_stack_size);
#endif
  bctx::jump_fcontext(blk.scheduler, nullptr);  // never resumed: the next block makes a new context
}

void prepare_fibers(int nthreads) {
  const std::size_t bytes = stack_bytes();
  const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  while (blk.fibers.size() < static_cast<std::size_t>(nthreads)) {
    Fiber f;
    // A guard page below each stack: an overflow faults instead of corrupting the next stack.
    void* m = mmap(nullptr, bytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) fail("cannot map a fiber stack of " + std::to_string(bytes) + " bytes");
    mprotect(m, page, PROT_NONE);
    f.stack = static_cast<char*>(m) + page;
#ifdef CUEMU_TSAN
    f.tsan = __tsan_create_fiber(0);
#endif
    blk.fibers.push_back(f);
  }
  const dim3 b = blk.state.bdim;
  for (int i = 0; i < nthreads; ++i) {
    Fiber& f = blk.fibers[static_cast<std::size_t>(i)];
    f.ts.tid = uint3{static_cast<unsigned>(i % b.x), static_cast<unsigned>(i / b.x % b.y),
                     static_cast<unsigned>(i / (b.x * b.y))};
    f.ts.linear = i;
    f.ts.lane = i % 32;
    f.ts.warp = i / 32;
    f.state = State::ready;
    f.barriers = 0;
    f.started = false;
    f.ctx = bctx::make_fcontext(f.stack + bytes, bytes, fiber_entry);
  }
}

int lanes_of_warp(int warp, int nthreads) { return std::min(32, nthreads - warp * 32); }

std::string deadlock_report(int nthreads) {
  std::string m = "deadlock: no thread can go on";
  for (int w = 0; w * 32 < nthreads; ++w) {
    const Collective& c = blk.warps[static_cast<std::size_t>(w)];
    if (!c.open || c.complete) continue;
    for (int lane = 0; lane < lanes_of_warp(w, nthreads); ++lane) {
      if (!((c.mask >> lane) & 1u) || ((c.arrived >> lane) & 1u)) continue;
      const Fiber& f = blk.fibers[static_cast<std::size_t>(w * 32 + lane)];
      m += "\n  warp " + std::to_string(w) + ": lanes wait at the collective at " + where_text(c.at) + " for lane " +
           std::to_string(lane) + ", which " +
           (f.state == State::done      ? std::string("has exited")
            : f.state == State::barrier ? "waits at __syncthreads() at " + where_text(f.at)
                                        : "waits at the collective at " + where_text(f.at));
    }
  }
  return m;
}

void run_block(int nthreads) {
  prepare_fibers(nthreads);
  blk.warps.assign(static_cast<std::size_t>((nthreads + 31) / 32), Collective{});
#ifdef CUEMU_TSAN
  if (!blk.tsan_scheduler) blk.tsan_scheduler = __tsan_get_current_fiber();
#endif
  std::vector<int> idx(static_cast<std::size_t>(nthreads));
  for (;;) {
    const unsigned long long events_before = blk.events;
    arrange(idx);
    for (int i : idx) {
      Fiber& f = blk.fibers[static_cast<std::size_t>(i)];
      if (f.state == State::ready || f.state == State::warp) resume(f);
    }
    int done = 0, at_barrier = 0, in_warp = 0;
    const Fiber* first = nullptr;
    for (int i = 0; i < nthreads; ++i) {
      const Fiber& f = blk.fibers[static_cast<std::size_t>(i)];
      if (f.state == State::done) ++done;
      if (f.state == State::warp) ++in_warp;
      if (f.state == State::barrier && !first) first = &f;
      at_barrier += f.state == State::barrier;
    }
    if (done == nthreads) break;
    if (at_barrier > 0 && at_barrier + done == nthreads) {
      if (done > 0) {
        device_fail(std::to_string(done) + " thread(s) exited while " + std::to_string(at_barrier) +
                    " wait at __syncthreads() at " + where_text(first->at) +
                    " (a barrier must be reached by every thread of the block)");
      }
      for (int i = 0; i < nthreads; ++i) {
        const Fiber& f = blk.fibers[static_cast<std::size_t>(i)];
        if (f.at.line() != first->at.line() || std::strcmp(f.at.file_name(), first->at.file_name()) != 0) {
          device_fail("divergent __syncthreads(): thread " + std::to_string(i) + " waits at " + where_text(f.at) +
                      ", thread " + std::to_string(first->ts.linear) + " at " + where_text(first->at));
        }
      }
      for (int i = 0; i < nthreads; ++i) blk.fibers[static_cast<std::size_t>(i)].state = State::ready;
      continue;
    }
    if (blk.events == events_before) {
      if (at_barrier > 0 && in_warp > 0) {
        device_fail("a warp collective waits for lanes that wait at __syncthreads() at " + where_text(first->at) +
                    "\n" + deadlock_report(nthreads));
      }
      device_fail(deadlock_report(nthreads));
    }
  }
#ifdef CUEMU_TSAN
  __tsan_acquire(&blk.block_done);
#endif
}

void free_block_memory() {
  for (const SharedObject& s : blk.shared) std::free(s.bytes);
  blk.shared.clear();
  std::free(blk.dynamic);
  blk.dynamic = nullptr;
  blk.static_smem = 0;
}

}  // namespace

// ---------------------------------------------------------------- device-side API
void syncthreads(std::source_location where) {
  Fiber* f = blk.running;
  f->state = State::barrier;
  f->at = where;
  ++blk.events;
#ifdef CUEMU_TSAN
  char* token = &blk.barrier_token[f->barriers & 1];
  __tsan_release(token);
#endif
  ++f->barriers;
  yield_to_scheduler();
#ifdef CUEMU_TSAN
  __tsan_acquire(token);
#endif
}

namespace {

// Lane `lane`'s source for a shuffle; `own` when the lane reads its own value (shfl_up/down past
// the end of its segment).
int shuffle_source(Shuffle kind, int lane, int arg, int width) {
  const int segment = lane / width * width;
  switch (kind) {
    case Shuffle::index: return segment + (arg % width + width) % width;
    case Shuffle::up: return lane - segment >= arg ? lane - arg : lane;
    case Shuffle::down: return lane - segment + arg < width ? lane + arg : lane;
    case Shuffle::xor_: {
      const int src = lane ^ arg;
      return src >= segment + width ? lane : src;
    }
  }
  return lane;
}

const char* shuffle_name(Shuffle kind, bool is_sync) {
  if (is_sync) return "__syncwarp";
  switch (kind) {
    case Shuffle::index: return "__shfl_sync";
    case Shuffle::up: return "__shfl_up_sync";
    case Shuffle::down: return "__shfl_down_sync";
    case Shuffle::xor_: return "__shfl_xor_sync";
  }
  return "?";
}

std::uint64_t collective(bool is_sync, Shuffle kind, unsigned mask, std::uint64_t mine, int arg, int width,
                         std::source_location where) {
  Fiber* f = blk.running;
  const int lane = f->ts.lane;
  const BlockState& b = blk.state;
  const int nthreads = static_cast<int>(b.bdim.x * b.bdim.y * b.bdim.z);
  const int lanes = lanes_of_warp(f->ts.warp, nthreads);
  const unsigned present = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1u);
  const std::string what = shuffle_name(kind, is_sync);
  if (!((mask >> lane) & 1u)) {
    device_fail(what + " at " + where_text(where) + ": lane " + std::to_string(lane) + " is not in its mask 0x" +
                fmt_hex(mask));
  }
  if (mask & ~present) {
    device_fail(what + " at " + where_text(where) + ": mask 0x" + fmt_hex(mask) + " names lanes warp " +
                std::to_string(f->ts.warp) + " does not have (it has " + std::to_string(lanes) + ")");
  }
  if (!is_sync && (width <= 0 || width > 32 || (width & (width - 1)) != 0)) {
    device_fail(what + " at " + where_text(where) + ": width " + std::to_string(width) +
                " is not a power of 2 up to 32");
  }
  Collective& c = blk.warps[static_cast<std::size_t>(f->ts.warp)];
  f->at = where;
  while (c.open && c.complete) {  // the previous collective is still being read by other lanes
    f->state = State::warp;
    yield_to_scheduler();
  }
  if (!c.open) {
    c = Collective{};
    c.open = true;
    c.mask = mask;
    c.kind = kind;
    c.is_sync = is_sync;
    c.at = where;
  } else if (c.mask != mask || c.kind != kind || c.is_sync != is_sync || c.at.line() != where.line() ||
             std::strcmp(c.at.file_name(), where.file_name()) != 0) {
    device_fail("divergent warp collective: lane " + std::to_string(lane) + " at " + what + " " + where_text(where) +
                " with mask 0x" + fmt_hex(mask) + ", other lanes at " + shuffle_name(c.kind, c.is_sync) + " " +
                where_text(c.at) + " with mask 0x" + fmt_hex(c.mask));
  }
  c.value[lane] = mine;
  c.arrived |= 1u << lane;
  ++blk.events;
  if (c.arrived == c.mask) c.complete = true;
#ifdef CUEMU_TSAN
  __tsan_release(&c);
#endif
  while (!c.complete) {
    f->state = State::warp;
    yield_to_scheduler();
  }
  f->state = State::ready;
#ifdef CUEMU_TSAN
  __tsan_acquire(&c);
#endif
  std::uint64_t result = 0;
  if (!is_sync) {
    const int src = shuffle_source(kind, lane, arg, width);
    if (!((mask >> src) & 1u)) {
      device_fail(what + " at " + where_text(where) + ": lane " + std::to_string(lane) + " reads lane " +
                  std::to_string(src) + ", which is not in the mask 0x" + fmt_hex(mask) + " (undefined on a GPU)");
    }
    result = c.value[src];
  }
  c.departed |= 1u << lane;
  ++blk.events;
  if (c.departed == c.mask) c.open = c.complete = false;
  return result;
}

}  // namespace

std::uint64_t warp_shuffle(Shuffle kind, unsigned mask, std::uint64_t mine, int arg, int width,
                           std::source_location where) {
  return collective(false, kind, mask, mine, arg, width, where);
}

void syncwarp(std::source_location where, unsigned mask) { collective(true, Shuffle::index, mask, 0, 0, 32, where); }

void threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }

void device_trap(const char* what, std::source_location where) { device_fail(std::string(what) + " at " + where_text(where)); }

void check_launch_bounds(long long max_threads, const char* kernel, std::source_location where) {
  const dim3 b = blk.state.bdim;
  const long long threads = static_cast<long long>(b.x) * b.y * b.z;
  if (threads > max_threads) {
    device_fail(std::string(kernel) + " declares __launch_bounds__(" + std::to_string(max_threads) + ") at " +
                where_text(where) + " but was launched with " + std::to_string(threads) +
                " threads per block (a GPU refuses the launch)");
  }
}

void* dynamic_shared_memory() { return blk.dynamic; }

void* block_shared_bytes(const void* key, std::size_t bytes, std::size_t align, const char* name,
                         std::source_location where) {
  for (const SharedObject& s : blk.shared) {
    if (s.key != key) continue;
#ifdef CUEMU_TSAN
    __tsan_acquire(s.bytes);  // every thread passes the declaration before using the object
#endif
    return s.bytes;
  }
  blk.static_smem += bytes;
  if (blk.static_smem > device::kMaxStaticSmem) {
    device_fail("static shared memory reaches " + std::to_string(blk.static_smem) + " bytes with '" + name + "' at " +
                where_text(where) + " (sm_90 allows " + std::to_string(device::kMaxStaticSmem) + ")");
  }
  if (blk.static_smem + blk.dynamic_smem > device::kMaxOptinSmem) {
    device_fail("static (" + std::to_string(blk.static_smem) + ") plus dynamic (" + std::to_string(blk.dynamic_smem) +
                ") shared memory exceed sm_90's " + std::to_string(device::kMaxOptinSmem) + " bytes per block");
  }
  // Exact size, so that AddressSanitizer sees an access past the declared object.
  void* p = nullptr;
  if (posix_memalign(&p, std::max<std::size_t>(align, sizeof(void*)), bytes ? bytes : 1) != 0) {
    fail("out of host memory for shared memory");
  }
  // Shared memory starts as garbage: NaN for floats, -1 for integers. A volatile loop, not memset:
  // ThreadSanitizer intercepts memset, and would take this first thread's fill for a write racing
  // with the other threads' first stores.
  volatile unsigned char* bytes_out = static_cast<unsigned char*>(p);
  for (std::size_t i = 0; i < bytes; ++i) bytes_out[i] = 0xff;
#ifdef CUEMU_TSAN
  // The allocation counts as this thread's write: the others acquire it at the declaration (above),
  // as on a GPU, where the object exists before any thread runs.
  __tsan_release(p);
#endif
  blk.shared.push_back({key, p});
  return p;
}

// ---------------------------------------------------------------- grids
void enqueue_grid(const void* kernel, const LaunchSite& site, const LaunchConfig& cfg, std::shared_ptr<void> params,
                  void (*body)(void*), const PointerList& pointers) {
  const std::string refused = device::refuse_launch(kernel, cfg);
  if (!refused.empty()) {
    report("launch refused at " + std::string(site.file) + ":" + std::to_string(site.line) + ": " + site.kernel + ": " +
           refused);
    set_last_error(device::launch_error(cfg));
    return;
  }
  for (int i = 0; i < pointers.count; ++i) {
    if (pointers.at[i] && !is_device_pointer(pointers.at[i])) {
      fail(std::string(site.file) + ":" + std::to_string(site.line) + ": " + site.kernel + ": pointer argument " +
           std::to_string(i) + " (" + fmt_pointer(pointers.at[i]) + ") is not device memory");
    }
  }
  const LaunchConfig c = cfg;
  const LaunchSite s = site;
  submit(cfg.stream, [c, s, params, body] {
    record_launch(s, c);
    blk.kernel = s.kernel;
    blk.site = &s;
    blk.params = params.get();
    blk.body = body;
    blk.state.bdim = c.block;
    blk.state.gdim = c.grid;
    blk.dynamic_smem = c.dynamic_smem;
    const int nthreads = static_cast<int>(c.block.x * c.block.y * c.block.z);
    std::vector<int> blocks(static_cast<std::size_t>(c.grid.x) * c.grid.y * c.grid.z);
    arrange(blocks);
    for (int lin : blocks) {
      const unsigned l = static_cast<unsigned>(lin);
      blk.state.bid = uint3{l % c.grid.x, l / c.grid.x % c.grid.y, l / (c.grid.x * c.grid.y)};
      current_block = &blk.state;
      // Exact size (ASan's redzone follows it) and poisoned, fresh for every block.
      blk.dynamic = std::malloc(c.dynamic_smem ? c.dynamic_smem : 1);
      if (!blk.dynamic) fail("out of host memory for dynamic shared memory");
      std::memset(blk.dynamic, 0xff, c.dynamic_smem);
      run_block(nthreads);
      free_block_memory();
    }
    current_block = nullptr;
    blk.site = nullptr;
  });
}

}  // namespace cuemu
