// State the emulated runtime shares between its parts: the error slot, streams, device memory and
// the reports.
#pragma once

#include <cuda_runtime.h>

#include <functional>
#include <string>

namespace cuemu {

// Prints "cuemu: what" to stderr and aborts: a fault a GPU would turn into garbage or a hang.
[[noreturn]] void fail(const std::string& what);
// Prints "cuemu: what" to stderr and goes on (the call also returns a CUDA error).
void report(const std::string& what);
std::string fmt_hex(unsigned value);
std::string fmt_pointer(const void* p);

void set_last_error(cudaError_t err);

// Runs `op` now, or records it while `stream` is being captured into a graph. Everything runs on
// the calling thread in submission order, so every stream is synchronous.
void submit(cudaStream_t stream, std::function<void()> op);

// [p, p + bytes) lies inside one live cudaMalloc / cudaHostAlloc allocation.
bool is_device_range(const void* p, std::size_t bytes);

}  // namespace cuemu
