#!/usr/bin/env python3
"""Mutation check of the emulated CUDA suite: how many planted kernel bugs does it catch?

A manual check, not run by CI. For every mutation of test/cuemu/mutations.txt (format at its top):
apply it to a private copy of the sources, rebuild the emulated test binary incrementally, run the
emulated [cuda] suite (ctest -L cuemu) and record whether it failed and how (a test comparison, a
"cuemu:" report, AddressSanitizer, UBSan, ThreadSanitizer, a crash, a timeout), then restore the file.
Finally writes a Markdown report (--report, relative to the repository root).

Layout under --work (default /tmp/tapegrok-mutations), reused between runs (rebuilds are incremental):
  src, src-address, src-thread    one copy of the repository per build (build*/ and .git left out), so
                                  a mutation and its restoration only dirty the build that tried it
  build-plain, build-address ...  Release builds (plain: -DTAPEGROK_CUEMU_PLAIN=ON); each builds and runs
                                  its variant of the emulated test binary (tapegrok_tests_cuemu_BUILD)
  logs/ID.BUILD[.ORDER].log       build and ctest output of every run; results.json
Each build first runs the unmutated suite (the baseline); a build whose baseline fails has its
mutation runs skipped. Builds run concurrently (one worker each) unless --serial.

The suite runs in two steps, both with --stop-on-failure: first the quick broad tests (--quick, a
ctest -R regex; the coverage check is left out with -FC), and only if they pass the whole labelled suite.

Usage: run_mutations.py [--only ID,ID] [--builds plain,address,thread] [--merge] [--jobs N] [--report PATH]
                        [--work DIR] [--timeout SECONDS] [--serial] [--check] [--report-only]
"""
import argparse
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
BUILDS = ('plain', 'address', 'thread')
QUICK = 'every op on the GPU matches|GPU kernels at model sizes|every reduction kind'
# How a failing run was caught, most specific first: (label, pattern in the ctest output).
CATCHERS = [
    ('ThreadSanitizer', re.compile(r'WARNING: ThreadSanitizer: .*')),
    ('AddressSanitizer', re.compile(r'ERROR: AddressSanitizer: .*')),
    ('UBSan', re.compile(r'\S*: runtime error: .*')),
    ('cuemu report', re.compile(r'cuemu: .*')),
    ('crash', re.compile(r'\*\*\*Exception: .*|Subprocess aborted.*|SegFault.*')),
    ('exception', re.compile(r'due to unexpected exception with message:\s*\n\s*(.*)')),
]  # otherwise a failed CHECK / REQUIRE: 'test comparison'

print_lock = threading.Lock()


def log(msg):
    with print_lock:
        print('[%s] %s' % (time.strftime('%H:%M:%S'), msg), flush=True)


def load_mutations(path):
    muts = []
    for n, line in enumerate(open(path), 1):
        s = line.strip()
        if not s or s.startswith('#'):
            continue
        try:
            m = json.loads(s)
        except ValueError as e:
            sys.exit('%s:%d: %s' % (path, n, e))
        for key in ('id', 'file', 'old', 'new', 'builds', 'what'):
            if key not in m:
                sys.exit('%s:%d: missing %r' % (path, n, key))
        m['runs'] = []
        for b in m['builds']:
            build, _, order = b.partition(':')
            if build not in BUILDS:
                sys.exit('%s:%d: unknown build %r' % (path, n, b))
            m['runs'].append((build, order or 'forward'))
        muts.append(m)
    ids = [m['id'] for m in muts]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        sys.exit('duplicate mutation ids: %s' % ', '.join(sorted(dup)))
    return muts


def validate(m, root):
    """The first changed line (number, old, new); exits unless `old` occurs exactly once."""
    text = open(os.path.join(root, m['file'])).read()
    count = text.count(m['old'])
    if count != 1:
        sys.exit('%s: the old text occurs %d times in %s (must be exactly once)' % (m['id'], count, m['file']))
    if m['old'] == m['new']:
        sys.exit('%s: old and new are the same' % m['id'])
    first = text[:text.index(m['old'])].count('\n') + 1
    for k, (a, b) in enumerate(zip(m['old'].split('\n'), m['new'].split('\n'))):
        if a != b:
            return first + k, a.strip(), b.strip()
    return first, m['old'].strip(), m['new'].strip()


def src_dir(work, build):
    return os.path.join(work, 'src' if build == 'plain' else 'src-' + build)


def sync(repo, dst):
    """Copies the repository into dst (build*/ and .git left out): only files whose content differs,
    which then get a new mtime, so ninja rebuilds exactly what changed. This also undoes a mutation
    an interrupted run left behind."""
    copied = 0
    for root, dirs, files in os.walk(repo):
        rel = os.path.relpath(root, repo)
        if rel == '.':
            dirs[:] = [d for d in dirs if not d.startswith('build') and d != '.git']
        os.makedirs(os.path.join(dst, rel), exist_ok=True)
        for f in files:
            s, d = os.path.join(root, f), os.path.join(dst, rel, f)
            if os.path.islink(s) or not os.path.isfile(s):
                continue
            if os.path.exists(d) and os.path.getsize(d) == os.path.getsize(s):
                with open(s, 'rb') as a, open(d, 'rb') as b:
                    if a.read() == b.read():
                        continue
            shutil.copyfile(s, d)
            shutil.copymode(s, d)
            copied += 1
    return copied


def run(cmd, logf, timeout, env=None, cwd=None):
    """Runs cmd (its own process group, killed whole on timeout); returns (rc or 'timeout', output)."""
    start = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                         start_new_session=True, text=True, errors='replace')
    try:
        out, _ = p.communicate(timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        rc = 'timeout'
    with open(logf, 'a') as f:
        f.write('$ %s\n%s\n[rc %s, %.0f s]\n\n' % (' '.join(cmd), out, rc, time.time() - start))
    return rc, out


class Build:
    def __init__(self, name, args):
        self.name, self.args = name, args
        self.src = src_dir(args.work, name)
        self.dir = os.path.join(args.work, 'build-' + name)
        self.info = {'name': name}

    def env(self, order):
        e = dict(os.environ, CUEMU_ORDER=order)
        if self.name == 'thread':  # stop at the first report: the run has failed anyway
            e['TSAN_OPTIONS'] = (e.get('TSAN_OPTIONS', '') + ' halt_on_error=1').strip()
        if self.name == 'address':  # UBSan's reports with a stack, as ASan's have
            e['UBSAN_OPTIONS'] = (e.get('UBSAN_OPTIONS', '') + ' print_stacktrace=1').strip()
        return e

    def ninja(self, logf, timeout):
        return run(['ninja', '-C', self.dir, '-j', str(self.args.jobs), 'tapegrok_tests_cuemu_' + self.name], logf,
                   timeout)

    def suite(self, logf, order, timeout):
        """Quick tests, then the whole suite; returns (passed, timed_out, output)."""
        start, outs = time.time(), []
        base = ['ctest', '--test-dir', self.dir, '-L', 'cuemu', '--stop-on-failure', '--output-on-failure']
        mine = '^cuemu[ _]%s' % self.name  # this build's variant: its tests and its fixture
        quick = '^cuemu %s [^:]+: (%s)' % (self.name, self.args.quick)
        for extra in (['-R', quick, '-FC', 'cuemu_' + self.name], ['-R', mine]):
            left = timeout - (time.time() - start)
            if left <= 0:
                return False, True, '\n'.join(outs)
            rc, out = run(base + extra, logf, left, env=self.env(order))
            outs.append(out)
            if rc != 0:
                return False, rc == 'timeout', '\n'.join(outs)
        return True, False, '\n'.join(outs)

    def prepare(self):
        """Syncs the sources, configures if needed, builds and runs the baseline; False if it fails."""
        a = self.args
        logf = os.path.join(a.work, 'logs', 'baseline.%s.log' % self.name)
        open(logf, 'w').close()
        copied = sync(a.repo, self.src)
        log('%s: %d file(s) copied into %s' % (self.name, copied, self.src))
        t0 = time.time()
        if not os.path.exists(os.path.join(self.dir, 'build.ninja')):
            rc, out = run(['cmake', '-S', self.src, '-B', self.dir, '-G', 'Ninja', '-DCMAKE_BUILD_TYPE=Release',
                           '-DTAPEGROK_CUEMU_PLAIN=' + ('ON' if self.name == 'plain' else 'OFF')], logf, 1800)
            if rc != 0:
                self.info.update(baseline='configure failed', detail=tail(out))
                return False
        rc, out = self.ninja(logf, 3600)
        self.info['build_s'] = round(time.time() - t0)
        if rc != 0:
            self.info.update(baseline='build failed', detail=first_error(out))
            return False
        t1 = time.time()
        ok, timed_out, out = self.suite(logf, 'forward', a.baseline_timeout)
        self.info['suite_s'] = round(time.time() - t1)
        if not ok:
            how, detail = classify(out, timed_out)
            self.info.update(baseline='FAILED (%s)' % how, detail=detail)
            return False
        self.info['baseline'] = 'passed'
        return True

    def try_mutation(self, m, results):
        """Applies m, rebuilds, runs the suite once per order m asks for in this build, restores."""
        a = self.args
        path = os.path.join(self.src, m['file'])
        original = open(path).read()
        orders = [o for b, o in m['runs'] if b == self.name]
        logf = os.path.join(a.work, 'logs', '%s.%s.log' % (m['id'], self.name))
        open(logf, 'w').close()
        if original.count(m['old']) != 1:  # the file changed since the check at the start
            for o in orders:
                results.append(dict(id=m['id'], build=self.name, order=o, result='invalid', how='old text not found',
                                    detail='', build_s=0, suite_s=0))
            return
        try:
            with open(path, 'w') as f:
                f.write(original.replace(m['old'], m['new']))
            t0 = time.time()
            rc, out = self.ninja(logf, 1800)
            build_s = round(time.time() - t0)
            if rc != 0:
                for o in orders:
                    results.append(dict(id=m['id'], build=self.name, order=o, result='invalid',
                                        how='compile error', detail=first_error(out), build_s=build_s, suite_s=0))
                log('%s [%s]: INVALID (compile error)' % (m['id'], self.name))
                return
            for o in orders:
                t1 = time.time()
                ok, timed_out, out = self.suite(logf, o, a.timeout)
                r = dict(id=m['id'], build=self.name, order=o, build_s=build_s, suite_s=round(time.time() - t1))
                if ok:
                    r.update(result='not caught', how='', detail='')
                else:
                    how, detail = classify(out, timed_out)
                    r.update(result='caught', how=how, detail=detail)
                results.append(r)
                log('%s [%s%s]: %s %s (%s)' % (m['id'], self.name, '' if o == 'forward' else ':' + o, r['result'],
                                               r['how'], r['detail'][:100]))
        finally:
            with open(path, 'w') as f:  # new mtime: the next build of this copy recompiles it
                f.write(original)


def tail(out, n=5):
    return ' / '.join(out.strip().splitlines()[-n:])


def first_error(out):
    for line in out.splitlines():
        if 'error' in line.lower() and ('error:' in line or 'Error' in line):
            return line.strip()
    return tail(out)


def catch2_failure(out):
    """The first Catch2 failure: its expression, expansion and messages on one line, or None."""
    m = re.search(r'FAILED:\n((?:.*\n){1,10})', out)
    if not m:
        return None
    lines = []
    for line in m.group(1).splitlines():
        if not line.strip() or line.startswith('---') or line.startswith('==='):
            break
        if line.strip() not in ('with expansion:', 'with message:', 'with messages:'):
            lines.append(line.strip())
    return ' | '.join(lines)


def classify(out, timed_out):
    """(how it was caught, a short detail: the failing test and the first telling line)."""
    failed = re.findall(r'^\s*\d+ - (.*?) \((?:Failed|SEGFAULT|Subprocess aborted|Timeout|Child aborted|Exception|'
                        r'ILLEGAL|OTHER_FAULT|BUS_ERROR|NUMERICAL)[^)]*\)', out, re.M)
    test = ('%s: ' % failed[0].replace('emulated: ', '')) if failed else ''
    if timed_out or '***Timeout' in out:
        return 'timeout', test + 'no result within the time limit'
    for label, pattern in CATCHERS:
        m = pattern.search(out)
        if m:
            text = ' '.join((m.group(1) if m.groups() else m.group(0)).split())
            if label in ('ThreadSanitizer', 'AddressSanitizer', 'UBSan'):  # where: the top frame of each stack
                frames = re.findall(r'^\s*#0 .*? in (\S+) (\S+)|^\s*#0 (\S+) (\S+)', out[m.end():], re.M)[:2]
                text += ' [' + '; '.join(' '.join(x for x in f if x) for f in frames) + ']' if frames else ''
            return label, test + re.sub(r'/\S*/src(?:-\w+)?/', '', text)[:400]
    failure = catch2_failure(out)
    if failure:
        return 'test comparison', test + failure[:300]
    return 'test failure', test + tail(out, 2)


def md_code(s):
    s = s.replace('|', '\\|')
    return '`%s`' % s if '`' not in s else '``%s``' % s


def verdicts(results):
    """Per mutation: 'caught' if any run caught it, 'invalid' only if every run was, else 'not caught'."""
    v = {}
    for r in results:
        if v.get(r['id']) != 'caught' and (r['id'] not in v or r['result'] != 'invalid'):
            v[r['id']] = r['result']
    return v


def write_report(path, args, muts, builds, results, started, lines):
    by_id = {m['id']: m for m in muts}
    verdict = verdicts(results)
    ran = [i for i in verdict if verdict[i] != 'invalid']
    caught = [i for i in ran if verdict[i] == 'caught']
    commit = subprocess.run(['git', '-C', args.repo, 'rev-parse', '--short', 'HEAD'], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(['git', '-C', args.repo, 'status', '--porcelain'], capture_output=True,
                           text=True).stdout.strip()
    o = ['# Mutation check of the emulated CUDA suite', '',
         'Generated by `test/cuemu/run_mutations.py` from `test/cuemu/mutations.txt` on %s (%s%s), %d min wall '
         'time on %d cores.' % (datetime.date.today().isoformat(), commit, ' plus uncommitted changes' if dirty else '',
                               round((time.time() - started) / 60), os.cpu_count()),
         'Each mutation is applied to a private copy of the sources, the emulated test binary is rebuilt and '
         '`ctest -L cuemu` runs (quick broad tests first, then the whole suite, stopping at the first failure). '
         'A mutation counts as caught when any of its runs fails.', '',
         '**%d of %d mutations caught.**' % (len(caught), len(ran)), '']
    invalid = [i for i in verdict if verdict[i] == 'invalid']
    if invalid:
        o += ['Invalid (did not compile, not counted): %s.' % ', '.join(invalid), '']
    o += ['## Builds and baselines', '', '| build | baseline (unmutated suite) | build time | suite time |',
          '|---|---|---|---|']
    for b in builds:
        i = b.info
        base = i.get('baseline', 'not run')
        if i.get('detail'):
            base += ': ' + md_code(i['detail'])
        o.append('| %s | %s | %s | %s |' % (b.name, base, ('%d s' % i['build_s']) if 'build_s' in i else '-',
                                           ('%d s' % i['suite_s']) if 'suite_s' in i else '-'))
    o += ['', '(Build time: the build at the start of the run, incremental when the work folder already held that build; suite time: the baseline run.)', '',
          '## Results', '', '| id | file:line | mutation | build | result | how caught | rebuild + suite |',
          '|---|---|---|---|---|---|---|']
    for m in muts:
        for r in [r for r in results if r['id'] == m['id']]:
            line, old, new = lines[m['id']]
            build = r['build'] + ('' if r['order'] == 'forward' else ' (CUEMU_ORDER=%s)' % r['order'])
            how = r['how'] + (': ' + md_code(r['detail']) if r['detail'] else '')
            o.append('| %s | %s:%d | %s → %s<br>%s | %s | %s | %s | %d + %d s |' % (
                m['id'], m['file'].replace('kernels/cuda/', ''), line, md_code(old), md_code(new), m['what'], build,
                r['result'], how, r['build_s'], r['suite_s']))
    survivors = [r for r in results if r['result'] == 'not caught']
    if survivors:
        o += ['', '## Not caught, and why', '']
        for r in survivors:
            m = by_id[r['id']]
            why = m.get('why') or 'no explanation recorded: investigate (a gap in the suite or in the emulator).'
            tag = ' (expected: %s)' % m['expect'] if m.get('expect') else ''
            o.append('- **%s** in the %s build%s%s: %s' % (
                r['id'], r['build'], '' if r['order'] == 'forward' else ' (CUEMU_ORDER=%s)' % r['order'], tag, why))
    skipped = [m['id'] for m in muts if m['id'] not in verdict]
    if skipped:
        o += ['', 'Not run (build not selected, or its baseline failed): %s.' % ', '.join(skipped)]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write('\n'.join(o) + '\n')


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--repo', default=REPO)
    ap.add_argument('--mutations', default=None, help='default: REPO/test/cuemu/mutations.txt')
    ap.add_argument('--work', default='/tmp/tapegrok-mutations')
    ap.add_argument('--only', default='', help='comma-separated mutation ids')
    ap.add_argument('--merge', action='store_true',
                    help="keep the last run's results (WORK/results.json) of what this run does not try")
    ap.add_argument('--builds', default=','.join(BUILDS))
    ap.add_argument('--jobs', type=int, default=2, help='ninja -j')
    ap.add_argument('--timeout', type=int, default=600, help='seconds for one mutation\'s suite run')
    ap.add_argument('--baseline-timeout', type=int, default=1800)
    ap.add_argument('--quick', default=QUICK, help='ctest -R regex of the tests run first')
    ap.add_argument('--report', default='docs/results/cuemu_mutations.md', help='relative to --repo')
    ap.add_argument('--serial', action='store_true', help='one build at a time')
    ap.add_argument('--check', action='store_true', help='only validate the mutations file')
    ap.add_argument('--report-only', action='store_true',
                    help='rewrite the report from WORK/results.json of the last run (e.g. after editing `why`)')
    args = ap.parse_args()
    args.repo = os.path.abspath(args.repo)
    muts = load_mutations(args.mutations or os.path.join(args.repo, 'test', 'cuemu', 'mutations.txt'))
    lines = {m['id']: validate(m, args.repo) for m in muts}
    if args.check:
        for m in muts:
            print('%-28s %s:%d  %s' % (m['id'], m['file'], lines[m['id']][0], ','.join(m['builds'])))
        print('%d mutations, all valid' % len(muts))
        return
    only = set(filter(None, args.only.split(',')))
    unknown = only - {m['id'] for m in muts}
    if unknown:
        sys.exit('unknown mutation ids: %s' % ', '.join(sorted(unknown)))
    wanted = set(filter(None, args.builds.split(',')))
    if wanted - set(BUILDS):
        sys.exit('--builds: expected some of %s' % ', '.join(BUILDS))
    all_muts = [dict(m) for m in muts]  # the report lists every mutation (with --merge, earlier runs too)
    muts = [m for m in muts if not only or m['id'] in only]
    for m in muts:
        m['runs'] = [(b, o) for b, o in m['runs'] if b in wanted]
    muts = [m for m in muts if m['runs']]
    os.makedirs(os.path.join(args.work, 'logs'), exist_ok=True)

    started = time.time()
    builds = [Build(b, args) for b in BUILDS if any(r[0] == b for m in muts for r in m['runs'])]
    results = []
    report = args.report if os.path.isabs(args.report) else os.path.join(args.repo, args.report)
    if args.report_only:
        last = json.load(open(os.path.join(args.work, 'results.json')))
        for b in builds:
            b.info = next((i for i in last['builds'] if i['name'] == b.name), b.info)
            blog = os.path.join(args.work, 'logs', 'baseline.%s.log' % b.name)
            if b.info.get('baseline', '').startswith('FAILED') and os.path.exists(blog):
                how, detail = classify(open(blog, errors='replace').read(), False)
                b.info.update(baseline='FAILED (%s)' % how, detail=detail)
        results = [r for r in last['results'] if r['id'] in {m['id'] for m in muts}]
        write_report(report, args, muts, builds, results, started - last.get('wall_s', 0), lines)
        log('report rewritten: %s' % report)
        return

    def worker(b):
        t = time.time()
        log('%s: baseline (sync, build, unmutated suite)' % b.name)
        if not b.prepare():
            log('%s: baseline %s: %s; its mutations are skipped' % (b.name, b.info['baseline'], b.info.get('detail')))
            return
        log('%s: baseline passed (build %d s, suite %d s)' % (b.name, b.info['build_s'], b.info['suite_s']))
        # Mutations of one file back to back: restoring a file and mutating it again is one recompile.
        mine = [m for m in muts if any(r[0] == b.name for r in m['runs'])]
        files = []
        for m in mine:
            if m['file'] not in files:
                files.append(m['file'])
        for m in sorted(mine, key=lambda m: files.index(m['file'])):
            b.try_mutation(m, results)
        b.info['total_s'] = round(time.time() - t)

    threads = [threading.Thread(target=worker, args=(b,)) for b in builds]
    for t in threads:
        t.start()
        if args.serial:
            t.join()
    for t in threads:
        t.join()

    results_path = os.path.join(args.work, 'results.json')
    infos = [b.info for b in builds]
    if args.merge and os.path.exists(results_path):  # keep the last run's results of the other builds
        last = json.load(open(results_path))
        now = {b.name for b in builds}
        ran = {(m['id'], b) for m in muts for b, _order in m['runs']}  # what this run tried
        results = [r for r in last['results'] if (r['id'], r['build']) not in ran] + results
        infos = [i for i in last['builds'] if i['name'] not in now] + infos
        muts = all_muts
    with open(results_path, 'w') as f:
        json.dump({'builds': infos, 'results': results, 'wall_s': round(time.time() - started)}, f, indent=1)
    shown = [type('B', (), {'name': i['name'], 'info': i}) for i in sorted(infos, key=lambda i: BUILDS.index(i['name']))]
    write_report(report, args, muts, shown, results, started, lines)
    v = verdicts(results)
    n_caught, n_ran = sum(x == 'caught' for x in v.values()), sum(x != 'invalid' for x in v.values())
    log('%d of %d mutations caught; report: %s' % (n_caught, n_ran, report))


if __name__ == '__main__':
    main()
