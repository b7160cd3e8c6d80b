// Subnormal floats (magnitudes below 1.2e-38 in float32, 2.2e-308 in float64) cost a microcode assist
// of ~100 cycles per operation on x86. A converged attention puts probabilities there (score gaps above
// 87 after scaling), and a second-order pass multiplies them into whole gradient matrices: in the
// Hessian-vector product of the default model 8% of a [2048, 384] GEMM operand was subnormal and that
// GEMM ran at 12 instead of 126 GFLOP/s. So the CPU kernels run with subnormals flushed to zero
// (MXCSR's FTZ: results that would be subnormal become 0; DAZ: subnormal inputs read as 0), as GPUs
// do for float32 in fast-math builds. The change to results is below 1.2e-38 absolute, and the mode
// is part of the determinism conditions: it is recorded in a run's config.json and can be turned
// off with TAPEGROK_FLUSH_SUBNORMALS=0 or set_flush_subnormals(false) (the run is then slower but
// keeps IEEE gradual underflow).
//
// Which threads: every CPU kernel enters through dispatch_floating, which holds a FloatModeScope on
// the calling thread, and parallel_for runs its chunks under the caller's mode. OpenBLAS's worker
// threads take the mode of the thread that creates them: in tapegrok executables the mode is set
// before OpenBLAS loads (kernels/cpu/preinit), so it holds there too; in Python, OpenBLAS was started
// by NumPy and its workers keep IEEE underflow, which only matters for a GEMM product that is itself
// subnormal (the next kernel reads it as 0).
#pragma once

namespace tg::cpu {

bool flush_subnormals();                // the process's setting (default on)
void set_flush_subnormals(bool flush);  // for the kernels that start after the call

// The calling thread's floating-point control word, and setting it (a no-op off x86).
unsigned float_control();
void set_float_control(unsigned control);

// Sets the calling thread's mode to the process's setting for the scope's lifetime; nests.
class FloatModeScope {
 public:
  FloatModeScope();
  ~FloatModeScope();
  FloatModeScope(const FloatModeScope&) = delete;
  FloatModeScope& operator=(const FloatModeScope&) = delete;

 private:
  unsigned saved_;
  bool changed_;
};

// The bits FTZ | DAZ where the CPU has them, else 0: what preinit sets before any library loads.
unsigned subnormal_flush_bits();

}  // namespace tg::cpu
