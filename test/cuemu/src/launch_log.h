// Launch counts per launch site, kernel, block size and dynamic shared memory, for the coverage
// check (test/cuemu/check_coverage.py). With CUEMU_LAUNCH_LOG=DIR each process writes its counts to
// DIR/launches-PID.tsv when it exits; ctest runs many processes and the check adds them up.
#pragma once

#include <cuda_runtime.h>

namespace cuemu {

void record_launch(const LaunchSite& site, const LaunchConfig& cfg);

}  // namespace cuemu
