// A CUDA graph of work captured once and replayed: the whole sync-free training step
// (experiments/training/trainer.cpp) is recorded as one graph and launched with a single call per step.
//
// capture(device, body) runs body() once with the device's stream being recorded: the kernels it
// enqueues are NOT executed, they become the graph. What body does on the host (shape checks, tape
// bookkeeping, counters) happens once, at capture; every replay repeats only the device work, with
// the same kernel arguments and the same memory. So body must
//  - take every value that changes from step to step from device memory (inputs, the optimizer's
//    lr and bias corrections), written by host-to-device copies enqueued before each replay;
//  - never wait for the device (no .item(), to_vector, copy_from_host): the backend refuses, naming
//    the call;
//  - read only memory that outlives the graph or that it produces itself, and leave its results in
//    memory allocated before the capture: a replay reads the same addresses again, and temporaries
//    allocated inside come from a capture pool that belongs to the graph until it is destroyed
//    (engine/allocator.h).
// On the CPU there is no graph: capture() raises "graph capture needs a CUDA device" (callers run the
// same work eagerly instead).
#pragma once

#include <cstdint>
#include <functional>

#include "engine/device.h"

namespace tg {

class CapturedGraph {
 public:
  CapturedGraph() = default;  // no graph; defined() is false
  ~CapturedGraph();
  CapturedGraph(CapturedGraph&& other) noexcept;
  CapturedGraph& operator=(CapturedGraph&& other) noexcept;
  CapturedGraph(const CapturedGraph&) = delete;
  CapturedGraph& operator=(const CapturedGraph&) = delete;

  // Records body() on `device`'s stream. If body throws, the capture is abandoned and the error passes
  // on. Nothing of body's device work has run when this returns: call replay() for that.
  static CapturedGraph capture(Device device, const std::function<void()>& body);

  void replay() const;  // enqueues one run of the graph on the device's stream (asynchronous)
  bool defined() const { return id_ != 0; }
  void reset();         // destroys the graph (waits for its launches) and frees its memory

 private:
  Device device_;
  std::uint64_t id_ = 0;
};

}  // namespace tg
