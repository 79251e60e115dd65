#!/usr/bin/env python3
"""Every translation unit of a CMake build, compiled by its own command with
-fsyntax-only: compile errors and front-end warnings (with -Werror from the
build's flags) for every target, at a fraction of a full build's cost.

usage: clang_check.py BUILD_DIR [JOBS]

BUILD_DIR was configured with CMAKE_EXPORT_COMPILE_COMMANDS=ON. Used by
scripts/levee.sh test for Clang 14 (docs/ci.md): the ThreadSanitizer stage
builds only the concurrency tests, and this covers the rest of the code.
"""
import concurrent.futures
import json
import os
import shlex
import subprocess
import sys


def syntax_only(entry):
    args = entry.get("arguments") or shlex.split(entry["command"])
    out = []
    skip = False
    for a in args:
        if skip:
            skip = False
            continue
        if a in ("-o", "-MF", "-MT", "-MQ"):
            skip = True
            continue
        if a in ("-c", "-MD", "-MMD"):
            continue
        out.append(a)
    return out + ["-fsyntax-only"]


def main():
    build = sys.argv[1]
    jobs = int(sys.argv[2]) if len(sys.argv) > 2 else os.cpu_count() or 1
    with open(os.path.join(build, "compile_commands.json")) as f:
        entries = json.load(f)

    def run(entry):
        p = subprocess.run(syntax_only(entry), cwd=entry["directory"], capture_output=True, text=True)
        return entry["file"], p.returncode, p.stderr

    # A precompiled header (the tests', tests/CMakeLists.txt) is built for
    # real first, by its own command: the files that use it need it.
    pch = [e for e in entries if "-emit-pch" in (e.get("arguments") or shlex.split(e["command"]))]
    for entry in pch:
        args = entry.get("arguments") or shlex.split(entry["command"])
        p = subprocess.run(args, cwd=entry["directory"], capture_output=True, text=True)
        if p.returncode != 0 or p.stderr.strip():
            print(f"== {entry['file']} (precompiled header): exit status {p.returncode}")
            print(p.stderr[:20000])
            return 1
    entries = [e for e in entries if e not in pch]

    failed = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        for file, rc, err in pool.map(run, entries):
            if rc != 0 or err.strip():
                failed += 1
                print(f"== {file}: exit status {rc}")
                print(err[:20000])
    print(f"clang -fsyntax-only: {len(entries)} translation units (and {len(pch)} precompiled headers),"
          f" {failed} with errors or warnings")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
