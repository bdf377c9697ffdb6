#!/usr/bin/env bash
# Run a command as on a machine whose cores are FACTOR times slower: the command and every process it
# starts share a CPU quota of (usable cores / FACTOR) core-seconds a second (a cgroup of their own, v1 or
# v2; needs root). While all the cores are busy, as in the test suite (about 94 % of its run), that is
# each core FACTOR times slower; a single busy thread is slowed less (it may use up to cores / FACTOR), so
# a mostly single-threaded command comes out faster than on the slower machine.
#
#   bench/cpu_cap.sh [--with-slurm] FACTOR command [args...]
#
# --with-slurm also caps the one-node SLURM of tests/slurm/start.sh (its daemons, hence the jobs they
# start) for the command's duration, then puts the daemons back where they were.
set -euo pipefail

usage() { echo "usage: $0 [--with-slurm] FACTOR command [args...]" >&2; exit 2; }
with_slurm=0
if [[ "${1:-}" == "--with-slurm" ]]; then with_slurm=1; shift; fi
[[ $# -ge 2 ]] || usage
factor=$1; shift
python3 -c "import sys; f = float(sys.argv[1]); sys.exit(0 if 1 <= f <= 100 else 1)" "$factor" 2>/dev/null \
  || { echo "$0: FACTOR must be a number from 1 to 100, not '$factor'" >&2; exit 2; }

cores=$(nproc)
period=100000
quota=$(python3 -c "import sys; print(int(int(sys.argv[1]) * int(sys.argv[2]) / float(sys.argv[3])))" \
        "$cores" "$period" "$factor")
name="ecg-cpu-cap-$$"

if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then  # cgroup v2
  root=/sys/fs/cgroup
  group=$root/$name
  grep -qw cpu "$root/cgroup.subtree_control" 2>/dev/null || echo +cpu > "$root/cgroup.subtree_control" \
    || { echo "$0: cannot enable the cpu controller in $root (root needed)" >&2; exit 1; }
  mkdir "$group" || { echo "$0: cannot create $group (root needed)" >&2; exit 1; }
  echo "$quota $period" > "$group/cpu.max"
  origin() { sed -n 's/^0:://p' "/proc/$1/cgroup"; }
elif [[ -d /sys/fs/cgroup/cpu ]]; then               # cgroup v1
  root=/sys/fs/cgroup/cpu
  group=$root/$name
  mkdir "$group" || { echo "$0: cannot create $group (root needed)" >&2; exit 1; }
  echo "$period" > "$group/cpu.cfs_period_us"
  echo "$quota" > "$group/cpu.cfs_quota_us"
  origin() { sed -n 's/^[0-9]*:[^:]*\bcpu\b[^:]*://p' "/proc/$1/cgroup"; }
else
  echo "$0: no cgroup cpu controller under /sys/fs/cgroup" >&2; exit 1
fi

declare -A moved=()
cleanup() {
  for pid in "${!moved[@]}"; do echo "$pid" > "$root${moved[$pid]}/cgroup.procs" 2>/dev/null || true; done
  rmdir "$group" 2>/dev/null || true
}
trap cleanup EXIT

if [[ $with_slurm == 1 ]]; then
  pids=$(pgrep -x 'slurmctld|slurmscriptd|slurmd|slurmstepd' || true)
  [[ -n "$pids" ]] || { echo "$0: --with-slurm: no SLURM daemon is running (tests/slurm/start.sh)" >&2; exit 1; }
  for pid in $pids; do
    moved[$pid]=$(origin "$pid")
    echo "$pid" > "$group/cgroup.procs"
  done
fi

echo "cpu_cap: $cores cores at 1/$factor each: a quota of $quota us every $period us ($group)" >&2
# the command runs in a child shell moved into the group first, so that it and all it starts are capped
bash -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' cpu_cap "$group" "$@"
