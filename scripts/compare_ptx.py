#!/usr/bin/env python3
"""Checks that a refactor of CUDA code left every kernel's PTX unchanged (so ptxas makes the same
SASS), without a GPU: compare the kernels of one set of .ptx files against another's.

  nvcc <the build's flags> -arch=sm_90 -ptx old.cu -o /tmp/old.ptx      (before the change)
  nvcc <the build's flags> -arch=sm_90 -ptx new_a.cu -o /tmp/a.ptx ...  (after it)
  scripts/compare_ptx.py /tmp/old.ptx -- /tmp/a.ptx /tmp/b.ptx

Names of anonymous-namespace symbols (which embed the file name), branch labels and local-depot
numbers are normalised; every .entry must exist on both sides with identical bodies. Exit 1 on
any difference."""
import re
import sys


def entries(paths):
    out = {}
    for path in paths:
        text = open(path).read()
        text = re.sub(r'\d+_GLOBAL__N__[0-9a-f]+_\d+_[A-Za-z0-9_]+?_cu_[0-9a-f]+', 'ANON', text)
        text = re.sub(r'\$L__BB\d+_', '$L__BB_', text)
        text = re.sub(r'__local_depot\d+', '__local_depot', text)
        for m in re.finditer(r'^(?:\.visible )?\.entry (\S+)\(', text, re.M):
            end = text.index('\n}\n', m.start())
            if m.group(1) in out:
                sys.exit(f'{m.group(1)} is defined twice')
            out[m.group(1)] = text[m.start():end]
    return out


def main():
    if '--' not in sys.argv[1:]:
        sys.exit(__doc__)
    cut = sys.argv.index('--')
    old, new = entries(sys.argv[1:cut]), entries(sys.argv[cut + 1:])
    missing = sorted(set(old) - set(new))
    extra = sorted(set(new) - set(old))
    changed = sorted(k for k in old if k in new and old[k] != new[k])
    for name, what in [(k, 'missing') for k in missing] + [(k, 'new') for k in extra] + [(k, 'changed') for k in changed]:
        print(f'{what}: {name}')
    print(f'{len(old)} kernels before, {len(new)} after: {len(missing)} missing, {len(extra)} new, {len(changed)} changed')
    return 1 if missing or extra or changed else 0


if __name__ == '__main__':
    sys.exit(main())
