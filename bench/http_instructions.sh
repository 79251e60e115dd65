#!/usr/bin/env bash
# Instructions per request of levee's HTTP client (keep-alive GETs against the
# bench's private nginx), counted by callgrind inside the client's event loop
# (io_context::run_one_until: the client's construction and nginx's start are
# left out) and divided by the requests started (calls of
# client_access::start), so the figure does not move with the machine's load.
# nginx runs in a child process, which callgrind does not follow.
#   bench/http_instructions.sh [path/to/levee-bench-http] [levee-bench-http options]
# e.g. bench/http_instructions.sh build/rel/bench/levee-bench-http --connections 16 --cancellable
set -euo pipefail
bin=${1:-build/bench/bench/levee-bench-http}
shift || true
out=$(mktemp)
trap 'rm -f "$out"' EXIT
valgrind --tool=callgrind --toggle-collect='*run_one_until*' --callgrind-out-file="$out" \
  "$bin" --levee-only --only http --duration 2 "$@" >/dev/null 2>&1
python3 - "$out" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
total = int(re.search(r'^summary: (\d+)', text, re.M).group(1))
names, calls, callee = {}, 0, None
for line in text.splitlines():
    d = re.match(r'^c?fn=\((\d+)\) (.*)', line)
    if d:
        names[d.group(1)] = d.group(2)
    c = re.match(r'^cfn=\((\d+)\)', line)
    if c:
        callee = names.get(c.group(1), '')
        continue
    if line.startswith('calls=') and callee is not None:
        if 'client_access::start' in callee:
            calls += int(line.split('=')[1].split()[0])
        callee = None
if not calls:
    sys.exit('no request counted')
print('%d instructions per request (%d requests)' % (total // calls, calls))
PY
