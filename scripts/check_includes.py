#!/usr/bin/env python3
"""levee's include rules (docs/design.md, "The layout"): every header belongs to
a capability folder, capabilities are ranked, and an include may point only
down: to a lower capability, or inside one capability from its public headers
to its impl/ and detail/ files, from impl/ to detail/, and from detail/ to
detail/. Compiled files (.ipp) sit at the top of their capability. No include
cycles. The levels inside a capability are below. Prints every violation; exit status 1 if there is one."""
import os, re, sys

RANK = {'core': 0, 'timeout': 1, 'breaker': 2, 'limit': 3, 'retry': 3, 'registry': 4,
        'fleet': 5, 'http': 5, 'config': 5, 'upstream': 6, 'hedge': 7,
        'pipeline': 8}
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'include')
inc = re.compile(r'^\s*#\s*include\s*<(levee/[^>]+)>', re.M)

def own(path):
    """(capability, folder kind) of a file: 'ipp', 'detail', 'impl' or 'public';
    None for levee/X.hpp (umbrella and forwarding headers, above everything)."""
    parts = path.split('/')
    if len(parts) == 2:
        return None
    if path.endswith('.ipp'):
        return parts[1], 'ipp'
    if 'detail' in parts:
        return parts[1], 'detail'
    if 'impl' in parts:
        return parts[1], 'impl'
    return parts[1], 'public'

files = {}
for d, _, names in os.walk(os.path.join(root, 'levee')):
    for n in names:
        p = os.path.relpath(os.path.join(d, n), root)
        files[p] = inc.findall(open(os.path.join(d, n)).read())

# Levels inside a capability, lowest first:
#  0 vocabulary: a public header that includes nothing of its capability but
#    other vocabulary (options, error codes, result types);
#  1 detail/ (with detail/impl/, the inline bodies of detail classes);
#  2 impl/*.hpp included by a public header (its template bodies);
#  3 public headers;
#  4 the compiled side: .ipp files, and impl/*.hpp that only they include.
vocab = set()
changed = True
while changed:
    changed = False
    for f, targets in files.items():
        o = own(f)
        if f in vocab or o is None or o[1] != 'public':
            continue
        mine = [t for t in targets if own(t) and own(t)[0] == o[0]]
        if all(t in vocab for t in mine):
            vocab.add(f)
            changed = True
included_by_headers = {t for f, ts in files.items() if own(f) and own(f)[1] != 'ipp' for t in ts}

def kind(path):
    o = own(path)
    if o is None:
        return None
    cap, k = o
    if k == 'public':
        return cap, 0 if path in vocab else 3
    if k == 'detail':
        return cap, 1
    if k == 'impl':
        return cap, 2 if path in included_by_headers else 4
    return cap, 4

bad = []
for f, targets in sorted(files.items()):
    kf = kind(f)
    for t in targets:
        if t not in files:
            bad.append(f'{f}: includes {t}, which does not exist')
            continue
        kt = kind(t)
        if kf is None:
            continue
        if kt is None:
            bad.append(f'{f}: includes the top-level header {t}; include its capability folder\'s')
            continue
        (cf, lf), (ct, lt) = kf, kt
        if cf not in RANK or ct not in RANK:
            bad.append(f'{f}: capability folder not ranked in scripts/check_includes.py')
        elif cf != ct:
            if RANK[ct] >= RANK[cf]:
                bad.append(f'{f}: includes {t}: {ct} is not below {cf}')
            elif lt in (2, 4):
                bad.append(f'{f}: includes another capability\'s impl file {t}')
        elif lt > lf:
            bad.append(f'{f}: includes {t}, which is not below it in {cf}/ '
                       '(compiled > public > impl > detail > vocabulary)')

# cycles, on the whole graph
state = {}
def visit(f, stack):
    state[f] = 1
    stack.append(f)
    for t in files.get(f, []):
        if t not in files:
            continue
        if state.get(t) == 1:
            bad.append('include cycle: ' + ' -> '.join(stack[stack.index(t):] + [t]))
        elif t not in state:
            visit(t, stack)
    stack.pop()
    state[f] = 2
for f in sorted(files):
    if f not in state:
        visit(f, [])

for b in bad:
    print(b)
print(f'{len(files)} headers, {sum(map(len, files.values()))} includes, {len(bad)} violations')
sys.exit(1 if bad else 0)
