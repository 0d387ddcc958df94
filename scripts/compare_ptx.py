#!/usr/bin/env python3
"""Checks that a refactor of CUDA code left every kernel's PTX unchanged (so ptxas makes the same
SASS), without a GPU: compare the kernels of one set of .ptx files against another's.

  nvcc <the build's flags> -arch=sm_90 -ptx old.cu -o /tmp/old.ptx      (before the change)
  nvcc <the build's flags> -arch=sm_90 -ptx new_a.cu -o /tmp/a.ptx ...  (after it)
  scripts/compare_ptx.py /tmp/old.ptx -- /tmp/a.ptx /tmp/b.ptx

or let it build both sides: the given CUDA sources (default: the selective scan's three) at a git
revision (exported to a temporary directory) and in the working tree, with the build's flags
(-O3 -DNDEBUG, sm_90, C++17; $NVCC or /usr/local/cuda/bin/nvcc):

  scripts/compare_ptx.py --against 14d0e48 [kernels/cuda/x.cu ...]

Names of anonymous-namespace symbols (which embed the file name), branch labels and local-depot
numbers are normalised; every .entry must exist on both sides with identical bodies. Exit 1 on
any difference."""
import os
import re
import shutil
import subprocess
import sys
import tempfile

SCAN_SOURCES = ['kernels/cuda/selective_scan_fwd.cu', 'kernels/cuda/selective_scan_bwd.cu',
                'kernels/cuda/selective_scan_step.cu']


def entries(paths):
    out = {}
    for path in paths:
        text = open(path).read()
        # The anonymous namespace's name carries a hash of the file and a position counter that
        # moves with any edit (whitespace too); the digits after it run into the next name's
        # length prefix, so all of them go (the same on both sides).
        text = re.sub(r'\d+_GLOBAL__N__[0-9a-f]{8}_\d+_[A-Za-z0-9_]+?_cu_[0-9a-f]{8}(?:_\d+)?\d*', 'ANON', text)
        text = re.sub(r'\$L__BB\d+_', '$L__BB_', text)
        text = re.sub(r'__local_depot\d+', '__local_depot', text)
        for m in re.finditer(r'^(?:\.visible )?\.entry (\S+)\(', text, re.M):
            end = text.index('\n}\n', m.start())
            if m.group(1) in out:
                sys.exit(f'{m.group(1)} is defined twice')
            out[m.group(1)] = text[m.start():end]
    return out


def build_ptx(root, sources, out_dir):
    """PTX of each source under root that exists there (the build's flags); the .ptx paths."""
    nvcc = os.environ.get('NVCC') or shutil.which('nvcc') or '/usr/local/cuda/bin/nvcc'
    paths = []
    for src in sources:
        if not os.path.exists(os.path.join(root, src)):
            print(f'note: {src} does not exist in {root}')
            continue
        out = os.path.join(out_dir, src.replace('/', '_') + '.ptx')
        subprocess.run([nvcc, '-DFMT_SHARED', '-DS6_WITH_CUDA=1', f'-I{root}', '-O3', '-DNDEBUG',
                        '-arch=sm_90', '-std=c++17', '-ptx', os.path.join(root, src), '-o', out],
                       check=True)
        paths.append(out)
    return paths


def against(rev, sources):
    """Old and new .ptx paths: sources at git revision rev and in the working tree."""
    root = subprocess.run(['git', 'rev-parse', '--show-toplevel'], check=True, capture_output=True,
                          text=True).stdout.strip()
    tmp = tempfile.mkdtemp(prefix='compare_ptx_')
    base = os.path.join(tmp, 'base')
    os.makedirs(base)
    archive = subprocess.run(['git', '-C', root, 'archive', rev], check=True, capture_output=True)
    subprocess.run(['tar', '-x', '-C', base], input=archive.stdout, check=True)
    os.makedirs(os.path.join(tmp, 'old'))
    os.makedirs(os.path.join(tmp, 'new'))
    print(f'building PTX of {rev} and of the working tree in {tmp}')
    return (build_ptx(base, sources, os.path.join(tmp, 'old')),
            build_ptx(root, sources, os.path.join(tmp, 'new')))


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == '--against':
        old_paths, new_paths = against(sys.argv[2], sys.argv[3:] or SCAN_SOURCES)
    elif '--' in sys.argv[1:]:
        cut = sys.argv.index('--')
        old_paths, new_paths = sys.argv[1:cut], sys.argv[cut + 1:]
    else:
        sys.exit(__doc__)
    old, new = entries(old_paths), entries(new_paths)
    missing = sorted(set(old) - set(new))
    extra = sorted(set(new) - set(old))
    changed = sorted(k for k in old if k in new and old[k] != new[k])
    for name, what in [(k, 'missing') for k in missing] + [(k, 'new') for k in extra] + [(k, 'changed') for k in changed]:
        print(f'{what}: {name}')
    print(f'{len(old)} kernels before, {len(new)} after: {len(missing)} missing, {len(extra)} new, {len(changed)} changed')
    return 1 if missing or extra or changed else 0


if __name__ == '__main__':
    sys.exit(main())
