#!/usr/bin/env bash
# A sweep run as a Slurm job array on a real one-node cluster on localhost (scripts/slurm-cluster): it is
# submitted with sbatch, waited for (bounded), followed with `sweep status`, reported, and submitting it
# again submits nothing. The cluster is stopped afterwards unless it was running before.
# usage: sweep_on_slurm.sh TAPEGROK_BINARY SOURCE_DIR
set -euo pipefail
binary=$1
source_dir=$2
if [ "$(id -u)" -ne 0 ]; then
  echo "skipped: starting a Slurm cluster (scripts/slurm-cluster) needs root"
  exit 77
fi

work=$(mktemp -d /tmp/tapegrok_slurm_XXXXXX)
was_running=0
if command -v scontrol >/dev/null && scontrol ping 2>/dev/null | grep -q UP; then was_running=1; fi
cleanup() {
  if [ "$was_running" -eq 0 ]; then "$source_dir/scripts/slurm-cluster" stop || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
"$source_dir/scripts/slurm-cluster" start

cd "$work"
cat > sweep.toml <<'TOML'
name = "slurm-ci"
seeds = [0, 1]
[train]
width = 32
layers = 1
heads = 4
steps = 50
eval-every = 10
batch-size = 64
device = "cpu"
[grid]
task = ["a+b", "a*b"]
[slurm]
partition = "local"
time = "00:10:00"
cpus-per-task = 1
TOML

fail() {
  echo "FAILED: $*"
  echo "--- sweep status"; "$binary" sweep status sweep.toml --all || true
  echo "--- squeue"; squeue -t all || true
  for f in runs/slurm-ci/slurm/*.out; do [ -f "$f" ] && { echo "--- $f"; cat "$f"; }; done
  exit 1
}

submitted=$("$binary" sweep run sweep.toml --backend slurm) || fail "sweep run --backend slurm: $submitted"
echo "$submitted"
job=$(sed -n 's/^submitted job \([0-9]*\) .*/\1/p' <<<"$submitted")
[ -n "$job" ] || fail "no job id in: $submitted"
grep -q '^#SBATCH --array=0-3$' runs/slurm-ci/slurm/sweep.sbatch || fail "the script's array line is not 0-3"

deadline=$((SECONDS + 300))
until "$binary" sweep status sweep.toml | grep -q '^sweep slurm-ci (4 runs in runs/slurm-ci): 4 finished'; do
  [ "$SECONDS" -lt "$deadline" ] || fail "the job array did not finish within 300 s"
  sleep 2
done
"$binary" sweep status sweep.toml

states=$(squeue -h -r -t all -j "$job" -o '%i %T' | sort)
echo "squeue: $(tr '\n' ' ' <<<"$states")"
for i in 0 1 2 3; do
  grep -q "^${job}_${i} COMPLETED$" <<<"$states" || fail "array task ${job}_${i} is not COMPLETED"
  grep -q "finished at step 50" "runs/slurm-ci/slurm/${job}_${i}.out" || fail "task $i's output has no finish line"
done

"$binary" sweep report sweep.toml --no-figures >/dev/null || fail "sweep report"
cells=runs/slurm-ci/report/cells.csv
for task in 'a+b' 'a*b'; do
  # cell,task,seeds,finished,...
  awk -F, -v t="$task" '$1 == t && $2 == t && $3 == 2 && $4 == 2 { found = 1 } END { exit !found }' "$cells" ||
    fail "report has no row with 2 finished seeds for $task"
done
[ "$(tail -n +2 runs/slurm-ci/report/runs.csv | wc -l)" -eq 4 ] || fail "runs.csv does not hold 4 runs"

again=$("$binary" sweep run sweep.toml --backend slurm) || fail "second submission: $again"
grep -q "4 finished, 0 queued or running, 0 failed.*0 to submit" <<<"$again" || fail "resubmitted: $again"
echo "slurm sweep: the 4 array tasks completed and the report holds both cells"
