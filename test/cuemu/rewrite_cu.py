#!/usr/bin/env python3
"""Rewrites a .cu file into host C++ for cuemu, keeping every line where it was.

What a host compiler cannot parse, or would get wrong, becomes a call into cuemu:
  kernel<<<grid, block, smem, stream>>>(args)  -> ::cuemu::launch(kernel, LaunchConfig(...), LaunchSite{...}, args)
  extern __shared__ T name[];                  -> T* const name = (T*) ::cuemu::dynamic_shared_memory();
  __shared__ T a[N], b;                        -> one fresh, poisoned object per declaration and block
  __global__ void __launch_bounds__(X) k(...) { -> the body first checks that the block has <= X threads
A kernel template launched with fewer template arguments than it has goes through a generic lambda,
so the call deduces the rest. Anything of `<<<` or `__shared__` left over is an error.

Also writes a manifest (JSON): every __global__ kernel and every launch site, for the coverage check.

Usage: rewrite_cu.py SOURCE.cu OUT.cpp MANIFEST.json [--display-path PATH]
"""
import json
import re
import sys


def matching(s, open_at, o='(', c=')'):
    depth = 0
    for j in range(open_at, len(s)):
        if s[j] == o:
            depth += 1
        elif s[j] == c:
            depth -= 1
            if depth == 0:
                return j
    raise SystemExit('%s: unbalanced %s at offset %d' % (DISPLAY, o, open_at))


def line_of(s, offset):
    return s.count('\n', 0, offset) + 1


def top_level_split(text, sep=','):
    parts, depth, cur = [], 0, ''
    for ch in text:
        if ch in '<([{':
            depth += 1
        elif ch in '>)]}':
            depth -= 1
        if ch == sep and depth == 0:
            parts.append(cur)
            cur = ''
        else:
            cur += ch
    parts.append(cur)
    return parts


def count_template_args(text):
    d, n = 0, 1
    for ch in text:
        d += {'<': 1, '(': 1, '>': -1, ')': -1}.get(ch, 0)
        n += ch == ',' and d == 0
    return n


def rewrite_dynamic_shared(src):
    pattern = r'extern\s+__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s*)?([\w:<>\s]+?)\s+(\w+)\s*\[\s*\]\s*;'
    return re.sub(pattern, r'\1* const \2 = static_cast<\1*>(::cuemu::dynamic_shared_memory());', src)


def rewrite_static_shared(src):
    out, pos = [], 0
    for m in re.finditer(r'__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s*)?([^;]+);', src):
        declarators = top_level_split(m.group(1))
        first = re.match(r'^\s*(.*?)\s*\b(\w+)\s*((?:\[[^\]]*\])*)\s*$', declarators[0], re.S)
        if not first:
            raise SystemExit('%s:%d: cannot parse the __shared__ declaration' % (DISPLAY, line_of(src, m.start())))
        base_type = ' '.join(first.group(1).split())
        pieces = [(first.group(2), first.group(3))]
        for d in declarators[1:]:
            more = re.match(r'^\s*(\w+)\s*((?:\[[^\]]*\])*)\s*$', d)
            if not more:
                raise SystemExit('%s:%d: cannot parse the __shared__ declarator %r' %
                                 (DISPLAY, line_of(src, m.start()), d))
            pieces.append((more.group(1), more.group(2)))
        code = []
        for name, dims in pieces:
            kind = base_type + ''.join(dims.split())
            code.append('static char cuemu_shared_key_%s; auto& %s = ::cuemu::block_shared<%s>(&cuemu_shared_key_%s, "%s");'
                        % (name, name, kind, name, name))
        out.append(src[pos:m.start()])
        out.append(' '.join(code) + '\n' * m.group(0).count('\n'))
        pos = m.end()
    out.append(src[pos:])
    return ''.join(out)


def find_kernels(src):
    """(name, line, launch-bounds expression or None, offset of the body's '{', template parameter count)."""
    kernels = []
    for m in re.finditer(r'__global__\s+void\s+(?:__launch_bounds__\s*\(([^)]*)\)\s*)?(\w+)\s*\(', src):
        close = matching(src, m.end() - 1)
        brace = src.find('{', close)
        between = src[close + 1:brace].strip()
        if between.endswith(';') or ';' in between:
            continue  # a declaration only
        # Template parameters: a `template <...>` directly before (possibly on the line above).
        head = src[:m.start()].rstrip()
        n_template = 0
        if head.endswith('>'):
            depth, j = 0, len(head) - 1
            while j >= 0:
                depth += {'>': 1, '<': -1}.get(head[j], 0)
                if depth == 0:
                    break
                j -= 1
            if re.search(r'template\s*$', head[:j]):
                n_template = count_template_args(head[j + 1:len(head) - 1])
        kernels.append((m.group(2), line_of(src, m.start()), m.group(1), brace, n_template))
    return kernels


def add_launch_bounds_checks(src, kernels):
    # From the last kernel back, so the offsets stay valid.
    for name, _line, bounds, brace, _n in sorted(kernels, key=lambda k: -k[3]):
        if bounds:
            check = ' ::cuemu::check_launch_bounds((%s), "%s", std::source_location::current());' % (bounds, name)
            src = src[:brace + 1] + check + src[brace + 1:]
    return src


def kernel_start(s, end):
    """Start of the kernel expression that ends just before `end` (identifiers, ::, <...>)."""
    i = end
    while i > 0 and s[i - 1].isspace():
        i -= 1
    while i > 0:
        c = s[i - 1]
        if c == '>':
            depth, j = 0, i - 1
            while j >= 0:
                depth += {'>': 1, '<': -1}.get(s[j], 0)
                if depth == 0:
                    break
                j -= 1
            i = j
        elif c.isalnum() or c in '_:':
            i -= 1
        else:
            break
    return i


def rewrite_launches(src, templates):
    out, pos, sites = [], 0, []
    while True:
        k = src.find('<<<', pos)
        if k < 0:
            out.append(src[pos:])
            break
        start = kernel_start(src, k)
        cfg_end = src.find('>>>', k)
        p = cfg_end + 3
        while src[p].isspace():
            p += 1
        if src[p] != '(':
            raise SystemExit('%s:%d: launch without an argument list' % (DISPLAY, line_of(src, k)))
        close = matching(src, p)
        kernel = ' '.join(src[start:k].split())
        cfg = ' '.join(src[k + 3:cfg_end].split())
        args = ' '.join(src[p + 1:close].split())
        line = line_of(src, start)
        name = kernel.split('<')[0].split('::')[-1].strip()
        explicit = count_template_args(kernel[kernel.index('<') + 1:kernel.rindex('>')]) if '<' in kernel else 0
        site = '::cuemu::LaunchSite{"%s", "%s", %d}' % (kernel, DISPLAY, line)
        if templates.get(name, 0) > explicit:
            call = '::cuemu::launch_deduced([](auto&... a) { %s(a...); }, ::cuemu::LaunchConfig(%s), %s%s)' % (
                kernel, cfg, site, (', ' + args) if args else '')
        else:
            call = '::cuemu::launch(%s, ::cuemu::LaunchConfig(%s), %s%s)' % (kernel, cfg, site,
                                                                             (', ' + args) if args else '')
        out.append(src[pos:start])
        out.append(call + '\n' * src[start:close + 1].count('\n'))
        pos = close + 1
        sites.append({'kernel': name, 'expression': kernel, 'file': DISPLAY, 'line': line})
    return ''.join(out), sites


def main():
    global DISPLAY
    args = sys.argv[1:]
    display = None
    if '--display-path' in args:
        i = args.index('--display-path')
        display = args[i + 1]
        del args[i:i + 2]
    source, output, manifest = args
    DISPLAY = display or source
    src = open(source).read()

    kernels = find_kernels(src)
    templates = {name: n for name, _l, _b, _o, n in kernels}
    src = add_launch_bounds_checks(src, kernels)
    src = rewrite_dynamic_shared(src)
    src = rewrite_static_shared(src)
    src, sites = rewrite_launches(src, templates)
    for token in ('<<<', '__shared__'):
        if token in src:
            raise SystemExit('%s:%d: %s left after rewriting' % (DISPLAY, line_of(src, src.index(token)), token))

    header = '#include "test/cuemu/include/cuemu/pointer_fields.h"\n#line 1 "%s"\n' % DISPLAY
    open(output, 'w').write(header + src)
    json.dump({'kernels': [{'name': n, 'file': DISPLAY, 'line': l, 'launch_bounds': b}
                           for n, l, b, _o, _t in kernels],
               'sites': sites}, open(manifest, 'w'), indent=1)


DISPLAY = ''
if __name__ == '__main__':
    main()
