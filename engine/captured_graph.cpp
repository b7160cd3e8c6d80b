#include "engine/captured_graph.h"

#include <utility>

#include "engine/backend.h"
#include "engine/error.h"

namespace tg {

CapturedGraph::~CapturedGraph() {
  try {
    reset();
  } catch (const std::exception&) {
    // A failure to free a graph cannot be acted on in a destructor; its memory stays reserved.
  }
}

CapturedGraph::CapturedGraph(CapturedGraph&& other) noexcept
    : device_(other.device_), id_(std::exchange(other.id_, 0)) {}

CapturedGraph& CapturedGraph::operator=(CapturedGraph&& other) noexcept {
  if (this != &other) {
    try {
      reset();
    } catch (const std::exception&) {
      // As in the destructor.
    }
    device_ = other.device_;
    id_ = std::exchange(other.id_, 0);
  }
  return *this;
}

CapturedGraph CapturedGraph::capture(Device device, const std::function<void()>& body) {
  Backend& be = backend_for(device);
  be.begin_capture();
  try {
    body();
  } catch (...) {
    be.abort_capture();
    throw;
  }
  CapturedGraph g;
  g.device_ = device;
  g.id_ = be.end_capture();
  return g;
}

void CapturedGraph::replay() const {
  TG_CHECK(defined(), "CapturedGraph::replay: no graph was captured");
  backend_for(device_).launch_graph(id_);
}

void CapturedGraph::reset() {
  if (id_ == 0) return;
  const std::uint64_t id = std::exchange(id_, 0);
  backend_for(device_).destroy_graph(id);
}

}  // namespace tg
