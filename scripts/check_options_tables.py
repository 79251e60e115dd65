#!/usr/bin/env python3
"""The options tables of README.md and docs/*.md follow their struct's
declaration order (designated initialisers copied from a table must compile)
and list every member.

An options table is a Markdown table whose first header cell is "Member",
preceded (on the line above, or above a blank line) by a marker naming its
struct:

    <!-- options: breaker_options -->
    | Member | Default | Meaning |

Its rows' first cells are the members (`name`, in backticks). The struct is
found in include/levee (`struct breaker_options {`); its data members are the
declarations at its top level. A "Member" table without a marker is an error,
so that no table escapes the check. Prints every problem; exit status 1 if
there is one."""
import glob
import os
import re
import sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
marker = re.compile(r'<!--\s*options:\s*(\w+)\s*-->')


def strip_comments(text):
    text = re.sub(r'/\*.*?\*/', ' ', text, flags=re.S)
    return re.sub(r'//[^\n]*', ' ', text)


def struct_members(name):
    """The data members of `struct name` in include/levee, in order; None if
    the struct is not found."""
    pattern = re.compile(r'\bstruct\s+' + re.escape(name) + r'\s*(?:final\s*)?\{')
    for path in sorted(glob.glob(os.path.join(root, 'include', 'levee', '**', '*.hpp'),
                                 recursive=True)):
        text = strip_comments(open(path, encoding='utf-8').read())
        m = pattern.search(text)
        if not m:
            continue
        depth, statement, members = 1, '', []
        for ch in text[m.end():]:
            if ch in '{(':
                depth += 1
            elif ch in '})':
                depth -= 1
                if depth == 0:
                    return members
                if depth == 1 and ch == '}' and '(' in re.split(r'[={]', statement)[0]:
                    statement = ''  # the end of an inline member function's body
                    continue
            if depth == 1 and ch == ';':
                member = declared_name(statement + ch)
                if member:
                    members.append(member)
                statement = ''
            elif depth >= 1:
                statement += ch
        return members
    return None


def declared_name(statement):
    """The data member a top-level statement declares, or None (functions,
    types, aliases, static members, access specifiers)."""
    s = re.sub(r'\b(public|private|protected)\s*:', ' ', statement).strip()
    if not s or re.match(r'(using|typedef|static|friend|struct|class|enum|template)\b', s):
        return None
    head = re.split(r'[={]', s, maxsplit=1)[0]
    if '(' in head:
        return None  # a member function
    m = re.search(r'(\w+)\s*(\[[^\]]*\])?\s*;?\s*$', head.rstrip(';').strip() + ';')
    return m.group(1) if m else None


def tables(path):
    """(line number, struct or None, [members]) for each "Member" table."""
    lines = open(path, encoding='utf-8').read().split('\n')
    found = []
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if not line.startswith('|') or cells[0] != 'Member':
            continue
        struct = None
        for j in (i - 1, i - 2):
            if j >= 0 and marker.search(lines[j]):
                struct = marker.search(lines[j]).group(1)
                break
            if j >= 0 and lines[j].strip():
                break
        rows = []
        for row in lines[i + 2:]:
            if not row.startswith('|'):
                break
            first = row.strip().strip('|').split('|')[0].strip()
            rows.append(first.strip('`'))
        found.append((i + 1, struct, rows))
    return found


problems = []
checked = 0
for path in [os.path.join(root, 'README.md')] + sorted(glob.glob(os.path.join(root, 'docs',
                                                                              '*.md'))):
    name = os.path.relpath(path, root)
    for line, struct, rows in tables(path):
        where = f'{name}:{line}'
        if struct is None:
            problems.append(f'{where}: a "Member" table without <!-- options: STRUCT --> above it')
            continue
        members = struct_members(struct)
        if members is None:
            problems.append(f'{where}: struct {struct} not found in include/levee')
            continue
        checked += 1
        unknown = [r for r in rows if r not in members]
        for r in unknown:
            problems.append(f'{where}: `{r}` is not a member of {struct}')
        missing = [m for m in members if m not in rows]
        for m in missing:
            problems.append(f'{where}: {struct}::{m} is missing from the table')
        listed = [r for r in rows if r in members]
        expected = [m for m in members if m in listed]
        if listed != expected:
            for k, (got, want) in enumerate(zip(listed, expected)):
                if got != want:
                    problems.append(f'{where}: row {k + 1} is `{got}`, but {struct} declares '
                                    f'`{want}` there (declaration order: '
                                    f'{", ".join(expected)})')
                    break

for p in problems:
    print(p)
print(f'{checked} options tables checked, {len(problems)} problems')
sys.exit(1 if problems or checked == 0 else 0)
