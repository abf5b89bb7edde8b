#!/bin/sh
# Run the RADICAL-Pilot tests in isolation: a private network namespace with only loopback
# (RADICAL-Pilot binds ports on every interface; nothing may collide or leave the host) and a
# process session of their own, whose leftovers are killed afterwards.
#
#   tests/radical/run_isolated.sh [pytest arguments...]
#
# Needs root (or an unprivileged user namespace) for `unshare -n`; without it, the tests run
# directly. PYTHON overrides the interpreter (default: the repository's .venv).
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
python=${PYTHON:-"$root/.venv/bin/python"}

# Runs inside the namespace: bring loopback up, run pytest, then kill anything left in this
# process group (RADICAL-Pilot's daemons stay in it) except this shell.
inner='if [ "$RHAPSODY_NETNS" = 1 ]; then ip link set lo up || exit 1; fi
"$0" -m pytest tests/radical "$@"
rc=$?
for pid in $(pgrep -g $$); do [ "$pid" = $$ ] || kill -KILL "$pid" 2>/dev/null || true; done
exit $rc'

if unshare -n true 2>/dev/null; then
    RHAPSODY_NETNS=1 exec setsid --wait unshare -n sh -c "$inner" "$python" "$@"
fi
echo "run_isolated.sh: cannot create a network namespace; running without one" >&2
RHAPSODY_NETNS=0 exec setsid --wait sh -c "$inner" "$python" "$@"
