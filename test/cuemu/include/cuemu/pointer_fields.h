// The device pointers inside the argument structs of kernels/cuda/launch.cuh, so that cuemu's
// host-pointer check at each launch sees them as it sees plain pointer arguments. (Structs private to
// a .cu file are not listed: their pointers go unchecked.)
#pragma once

#include <cuda_runtime.h>

#include "kernels/cuda/launch.cuh"

namespace cuemu {

template <> struct PointerFields<tg::cuda::AmpMlp> {
  static void collect(const tg::cuda::AmpMlp& m, PointerList& out) {
    for (int l = 0; l < m.layers && l < tg::cuda::kMaxAmpLayers; ++l) {
      out.add(m.w[l]);
      out.add(m.b[l]);
    }
  }
};
template <> struct PointerFields<tg::cuda::AmpGrads> {
  static void collect(const tg::cuda::AmpGrads& g, PointerList& out) {
    for (int l = 0; l < tg::cuda::kMaxAmpLayers; ++l) {
      out.add(g.w[l]);
      out.add(g.b[l]);
    }
  }
};
template <> struct PointerFields<tg::cuda::Clip> {
  static void collect(const tg::cuda::Clip& c, PointerList& out) { out.add(c.norm); }
};

}  // namespace cuemu
