// Embedding rows by id; the backward adds rows of dout into dweight in order of n.
#include <cstring>

#include "kernels/cpu/kernels.h"

namespace tg::cpu {

template <class T>
void embedding_forward(const std::int32_t* ids, const T* weight, T* out, std::int64_t n, std::int64_t c) {
  for (std::int64_t i = 0; i < n; ++i) std::memcpy(out + i * c, weight + ids[i] * c, sizeof(T) * static_cast<std::size_t>(c));
}

template <class T>
void embedding_backward(const std::int32_t* ids, const T* dout, T* dweight, std::int64_t n, std::int64_t vocab,
                        std::int64_t c) {
  for (std::int64_t i = 0; i < vocab * c; ++i) dweight[i] = T(0);
  for (std::int64_t i = 0; i < n; ++i) {
    T* row = dweight + ids[i] * c;
    const T* src = dout + i * c;
    for (std::int64_t e = 0; e < c; ++e) row[e] += src[e];
  }
}

#define TG_INSTANTIATE(T)                                                                             \
  template void embedding_forward<T>(const std::int32_t*, const T*, T*, std::int64_t, std::int64_t); \
  template void embedding_backward<T>(const std::int32_t*, const T*, T*, std::int64_t, std::int64_t, std::int64_t);
TG_INSTANTIATE(float)
TG_INSTANTIATE(double)
#undef TG_INSTANTIATE

}  // namespace tg::cpu
