#!/usr/bin/env python3
"""Fails unless the emulated suite executed every line of device code in kernels/cuda (.cu, .cuh).

Takes the object folder of a cuemu device built with gcov (cuemu_device_address), after its emulated
tests ran: gcov then counts each line of the original .cu files (the rewritten sources keep them under #line).
Device code is every __global__ kernel's body and every __device__ function's body. A kernel path
that no test shape reaches (a loop past a grid cap, a tile loop, a guard) shows up as a line that
never ran. Lines ending in `// cuemu: unreached (REASON)` are exempt and listed.

Launcher branches (host code) are checked by check_coverage.py through the launch sites; this
check adds the paths inside the kernels.

Usage: check_line_coverage.py OBJECT_DIR [--report FILE]
"""
import glob
import os
import re
import subprocess
import sys

EXEMPT = re.compile(r'//\s*cuemu:\s*unreached\b')


def device_ranges(source):
    """(first, last) line numbers of every __global__ / __device__ function body in `source`."""
    text = open(source).read()
    ranges = []
    for m in re.finditer(r'__(global|device)__[^;{(]*?\b(\w+)\s*\(', text):
        depth, j = 0, m.end() - 1
        while j < len(text):  # the parameter list
            depth += {'(': 1, ')': -1}.get(text[j], 0)
            if depth == 0:
                break
            j += 1
        brace = text.find('{', j)
        if brace < 0 or ';' in text[j:brace]:
            continue  # a declaration
        depth, k = 0, brace
        while k < len(text):
            depth += {'{': 1, '}': -1}.get(text[k], 0)
            if depth == 0:
                break
            k += 1
        ranges.append((m.group(2), text.count('\n', 0, brace) + 1, text.count('\n', 0, k) + 1))
    return ranges


def gcov_lines(build_dir, root):
    """{source path (as in #line): {line: count or None}} from the rewritten kernels' coverage data."""
    counts = {}
    for gcda in glob.glob(os.path.join(build_dir, '**', 'cuemu', 'generated', '*.cpp.gcda'), recursive=True):
        obj = gcda[:-len('.gcda')] + '.o'  # gcov finds the notes through the object's name
        out = subprocess.run(['gcov', '-t', '-o', obj, os.path.basename(gcda[:-len('.gcda')])],
                             capture_output=True, text=True, cwd=root)  # #line paths are relative to it
        current = None
        for line in out.stdout.splitlines():
            parts = line.split(':', 2)
            if len(parts) < 3:
                continue
            count, number = parts[0].strip(), parts[1].strip()
            if number == '0':
                if parts[2].startswith('Source:'):
                    current = counts.setdefault(parts[2][len('Source:'):], {})
                continue
            if current is None or count == '-':
                continue
            n = 0 if count.startswith('#') or count.startswith('=') else int(count.rstrip('*'))
            current[int(number)] = current.get(int(number), 0) + n
    return counts


def main():
    args = sys.argv[1:]
    report = None
    if '--report' in args:
        i = args.index('--report')
        report = args[i + 1]
        del args[i:i + 2]
    build_dir = os.path.abspath(args[0])
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    counts = gcov_lines(build_dir, root)
    if not counts:
        sys.exit('check_line_coverage: no coverage data under %s (the emulated tests of a device '
                 'built with gcov run first)' % build_dir)

    missed, exempt, executable, ran = [], [], 0, 0
    sources = glob.glob(os.path.join(root, 'kernels', 'cuda', '*.cu')) + glob.glob(
        os.path.join(root, 'kernels', 'cuda', '*.cuh'))
    for source in sorted(sources):
        rel = os.path.relpath(source, root)
        lines = open(source).read().split('\n')
        file_counts = counts.get(rel) or counts.get(source) or {}
        for name, first, last in device_ranges(source):
            for n in range(first, last + 1):
                if n not in file_counts:
                    continue
                executable += 1
                if file_counts[n] > 0:
                    ran += 1
                elif EXEMPT.search(lines[n - 1]):
                    exempt.append('%s:%d (%s): %s' % (rel, n, name, lines[n - 1].strip()))
                else:
                    missed.append('%s:%d (%s): %s' % (rel, n, name, lines[n - 1].strip()))
    text = ['device code: %d of %d executable lines ran, %d exempt, %d never ran' %
            (ran, executable, len(exempt), len(missed))]
    text += ['exempt: ' + e for e in exempt] + ['never ran: ' + m for m in missed]
    print('\n'.join(text))
    if report:
        open(report, 'w').write('\n'.join(text) + '\n')
    if missed:
        sys.exit('check_line_coverage: %d line(s) of device code never ran in the emulated suite' % len(missed))


if __name__ == '__main__':
    main()
