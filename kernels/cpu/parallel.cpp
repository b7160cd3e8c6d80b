#include "kernels/cpu/parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "kernels/cpu/float_mode.h"

namespace tg::cpu {

namespace {

int threads_from_environment() {
  for (const char* name : {"TAPEGROK_CPU_THREADS", "OPENBLAS_NUM_THREADS"}) {
    if (const char* v = std::getenv(name); v != nullptr && *v != '\0') {
      const int n = std::atoi(v);
      if (n >= 1) return n;
    }
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

// Workers sleep on a condition variable between jobs. A job is a chunk counter that the caller and
// the workers draw from until it runs out; the caller then waits for the workers still in a chunk.
class Pool {
 public:
  explicit Pool(int threads) { resize(threads); }
  ~Pool() { stop_all(); }

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

  void resize(int threads) {
    stop_all();
    stop_ = false;
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { work(); });
  }

  void run(std::int64_t chunks, const std::function<void(std::int64_t)>& chunk) {
    std::lock_guard one_job(callers_);  // two host threads calling kernels at once take turns
    {
      std::lock_guard lock(mutex_);
      job_ = &chunk;
      chunks_ = chunks;
      control_ = float_control();  // chunks run under the caller's floating-point mode
      next_.store(0, std::memory_order_relaxed);
      busy_ = static_cast<int>(workers_.size());
      ++generation_;
    }
    wake_.notify_all();
    drain(chunk, chunks);
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return busy_ == 0; });
    job_ = nullptr;
  }

 private:
  void drain(const std::function<void(std::int64_t)>& chunk, std::int64_t chunks) {
    for (std::int64_t i = next_.fetch_add(1, std::memory_order_relaxed); i < chunks;
         i = next_.fetch_add(1, std::memory_order_relaxed)) {
      chunk(i);
    }
  }

  void work() {
    std::uint64_t seen = 0;
    while (true) {
      const std::function<void(std::int64_t)>* job;
      std::int64_t chunks;
      unsigned control;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        job = job_;
        chunks = chunks_;
        control = control_;
      }
      if (control != float_control()) set_float_control(control);
      inside_ = true;
      drain(*job, chunks);
      inside_ = false;
      std::lock_guard lock(mutex_);
      if (--busy_ == 0) done_.notify_one();
    }
  }

  void stop_all() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (std::thread& t : workers_) t.join();
    workers_.clear();
  }

 public:
  static thread_local bool inside_;  // true on a thread that is running a chunk

 private:
  std::vector<std::thread> workers_;
  std::mutex callers_, mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(std::int64_t)>* job_ = nullptr;
  std::int64_t chunks_ = 0;
  unsigned control_ = 0;
  std::atomic<std::int64_t> next_{0};
  int busy_ = 0;
  std::uint64_t generation_ = 0;
  bool stop_ = false;
};

thread_local bool Pool::inside_ = false;

Pool& pool() {
  static Pool* instance = new Pool(threads_from_environment());  // never destroyed: kernels may run at exit
  return *instance;
}

}  // namespace

int cpu_threads() { return pool().threads(); }

void set_cpu_threads(int threads) { pool().resize(std::max(1, threads)); }

void parallel_for(std::int64_t n, std::int64_t grain, const std::function<void(std::int64_t, std::int64_t)>& body) {
  if (n <= 0) return;
  grain = std::max<std::int64_t>(grain, 1);
  const std::int64_t chunks = (n + grain - 1) / grain;
  if (chunks == 1 || Pool::inside_ || pool().threads() == 1) {
    for (std::int64_t c = 0; c < chunks; ++c) body(c * grain, std::min(n, (c + 1) * grain));
    return;
  }
  Pool::inside_ = true;  // the caller draws chunks too; nested calls from its chunks run inline
  pool().run(chunks, [&](std::int64_t c) { body(c * grain, std::min(n, (c + 1) * grain)); });
  Pool::inside_ = false;
}

}  // namespace tg::cpu
