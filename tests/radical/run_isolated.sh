#!/bin/sh
# Run the RADICAL-Pilot tests in isolation, and leave nothing running afterwards:
#  - a private network namespace with only loopback: no port collides with other jobs (the
#    backend keeps a local pilot on loopback itself; this is a second line of defence);
#  - a process session of their own, killed as a whole at the end (RADICAL-Pilot's daemons stay
#    in the test's process group), also when this script is interrupted or timed out;
#  - a scratch directory for pytest's tmp_path (and so the pilots' HOME): any process still
#    referring to it at the end (tasks run in sessions of their own) is killed too.
#
#   tests/radical/run_isolated.sh [pytest arguments...]      # default path: tests/radical
#
# `unshare -n` needs root (or unprivileged user namespaces) and `ip` to bring loopback up;
# without them the tests run in the host's network. PYTHON overrides the interpreter (default: the repository's .venv).
# The scratch directory is removed after a passing run and kept (its path printed) otherwise.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root" || exit 2
python=${PYTHON:-"$root/.venv/bin/python"}
scratch=$(mktemp -d "${TMPDIR:-/tmp}/rhapsody-radical-tests.XXXXXX") || exit 2

target=tests/radical
for arg in "$@"; do
    case $arg in tests/*) target= ;; esac
done

# Inside the new session: bring loopback up when in a fresh namespace, then become pytest.
inner='if [ "$1" = netns ]; then ip link set lo up || exit 2; fi; shift; exec "$@"'
# pytest's output also goes to a file, so that a crash (a C library's abort, whose thread dump
# fills any terminal's tail) can be summed up at the end: which test (-v), and what the library
# wrote to fd 2 (--capture=sys: pytest's default fd capture loses it with the process).
out="$scratch/pytest.out"
: >"$out"
if unshare -n true 2>/dev/null && command -v ip >/dev/null 2>&1; then
    setsid unshare -n sh -c "$inner" sh netns "$python" -m pytest $target \
        --basetemp="$scratch/pytest" -v --capture=sys "$@" >"$out" 2>&1 &
else
    echo "run_isolated.sh: cannot create a network namespace (needs root and iproute2's ip);" \
        "using the host's network" >&2
    setsid sh -c "$inner" sh host "$python" -m pytest $target --basetemp="$scratch/pytest" \
        -v --capture=sys "$@" >"$out" 2>&1 &
fi
# A background job of a script is no group leader, so setsid needs no fork: $! leads the session.
session=$!
tail -n +1 -f --pid="$session" "$out" &

reap() {
    kill -KILL -- "-$session" 2>/dev/null
    for proc in /proc/[0-9]*; do
        pid=${proc#/proc/}
        [ "$pid" = $$ ] && continue
        if grep -qsaF "$scratch" "$proc/environ" "$proc/cmdline"; then
            kill -KILL "$pid" 2>/dev/null
        fi
    done
}
trap 'reap; exit 129' HUP
trap 'reap; exit 130' INT
trap 'reap; exit 143' TERM

wait "$session"
rc=$?
wait  # the tail of the output ends with the session
reap
if [ "$rc" = 0 ]; then
    rm -rf "$scratch"
else
    if [ "$rc" -gt 128 ]; then
        echo "run_isolated.sh: pytest was killed by signal $((rc - 128)); the test it ran and" \
            "what was printed just before:" >&2
        grep -a -B4 -m1 -E "^(Fatal Python error|Current thread)" "$out" >&2 ||
            tail -n 5 "$out" >&2
    fi
    echo "run_isolated.sh: pytest exited with $rc; pilot sandboxes and logs are in $scratch" >&2
fi
exit "$rc"
