#!/usr/bin/env python3
"""Fails unless the emulated test suite launched every CUDA kernel from every launch site.

Reads the manifests rewrite_cu.py wrote (every __global__ kernel and every `<<<...>>>` site of
kernels/cuda) and the launch logs cuemu wrote (CUEMU_LAUNCH_LOG: counts per site, kernel, block size
and dynamic shared memory, one file per test process), and checks:
  - every kernel was launched at least once;
  - every launch site ran (so every launcher branch that picks a kernel was taken);
  - every block size in BLOCK_SIZE_BRANCHES was used at its site (launchers that pick a block size
    from the shapes at one site).
Prints the per-kernel table; with --launches-out FILE also writes, per kernel, the largest block and
dynamic shared memory it was launched with (for scripts/check-cuda-resources).

Usage: check_coverage.py MANIFEST_DIR LOG_DIR [--launches-out FILE]
"""
import collections
import glob
import json
import os
import sys

# Launch sites whose block size the launcher picks from the shapes: (file, kernel) -> the thread
# counts per block the suite must reach there, mirroring the launchers' rules:
#   attention.cu: the long-sequence backward's key kernel runs 128 threads for heads of 128 and more,
#   else the head size rounded up to a warp;
#   attention.cu: the short-sequence kernels run 256 threads when t * d >= 2048, else 128.
BLOCK_SIZE_BRANCHES = {
    ('kernels/cuda/attention.cu', 'attention_backward_key_kernel'): {32, 128},
    ('kernels/cuda/attention.cu', 'attention_forward_short_kernel'): {128, 256},
    ('kernels/cuda/attention.cu', 'attention_backward_short_kernel'): {128, 256},
}


def main():
    args = sys.argv[1:]
    out = None
    if '--launches-out' in args:
        i = args.index('--launches-out')
        out = args[i + 1]
        del args[i:i + 2]
    manifest_dir, log_dir = args

    kernels, sites = [], []
    for path in sorted(glob.glob(os.path.join(manifest_dir, '*.json'))):
        m = json.load(open(path))
        kernels += m['kernels']
        sites += m['sites']
    if not kernels:
        sys.exit('check_coverage: no manifests in %s' % manifest_dir)

    logs = glob.glob(os.path.join(log_dir, 'launches-*.tsv'))
    site_count = collections.Counter()
    kernel_count = collections.Counter()
    threads_at = collections.defaultdict(set)
    most = {}
    for path in logs:
        for line in open(path):
            file, lineno, expression, threads, smem, count = line.rstrip('\n').split('\t')
            name = expression.split('<')[0].split('::')[-1].strip()
            site_count[(file, int(lineno))] += int(count)
            kernel_count[(file, name)] += int(count)
            threads_at[(file, name)].add(int(threads))
            t, s = most.get(name, (0, 0))
            most[name] = (max(t, int(threads)), max(s, int(smem)))

    problems = []
    print('%-34s %-22s %10s  %s' % ('kernel', 'file', 'launches', 'threads per block'))
    for k in kernels:
        key = (k['file'], k['name'])
        n = kernel_count[key]
        print('%-34s %-22s %10d  %s' % (k['name'], os.path.basename(k['file']), n,
                                         ','.join(str(t) for t in sorted(threads_at[key])) or '-'))
        if n == 0:
            problems.append('%s:%d: kernel %s was never launched' % (k['file'], k['line'], k['name']))
    for s in sites:
        if site_count[(s['file'], s['line'])] == 0:
            problems.append('%s:%d: the launch of %s here never ran' % (s['file'], s['line'], s['expression']))
    for (file, name), wanted in BLOCK_SIZE_BRANCHES.items():
        missing = wanted - threads_at[(file, name)]
        if missing:
            problems.append('%s: %s was never launched with %s threads per block (its launcher picks them)' %
                            (file, name, ' or '.join(str(t) for t in sorted(missing))))

    if out:  # kernels/cuda's kernels only (not the CUB stand-ins')
        ours = {k['name'] for k in kernels}
        json.dump({name: {'max_threads': t, 'max_dynamic_smem': s} for name, (t, s) in sorted(most.items())
                   if name in ours}, open(out, 'w'), indent=1)
    print('%d kernels, %d launch sites, %d launch logs' % (len(kernels), len(sites), len(logs)))
    if problems:
        print('\n'.join(problems))
        sys.exit('check_coverage: %d problem(s): every kernel and launch path must run in the emulated suite'
                 % len(problems))
    print('check_coverage: every kernel and launch site ran')


if __name__ == '__main__':
    main()
