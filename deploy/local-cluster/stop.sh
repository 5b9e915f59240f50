#!/usr/bin/env bash
# Stops the local Slurm cluster that deploy/local-cluster/start.sh started.
#
#   deploy/local-cluster/stop.sh [--dir DIR] [--keep-jobs] [--munge] [--timeout S]
#
# First cancels the cluster's jobs and waits for them to end (so that no slurmstepd or job
# process outlives its slurmd; --keep-jobs skips this and leaves them to slurmctld's saved
# state), then stops each slurmd and slurmctld by the pid recorded in DIR/run, never by name,
# and waits for them to exit. munged stays running unless --munge is given (it is stopped by
# its pid file then). DIR (default /var/tmp/belay-local-cluster) keeps the configuration,
# saved state and logs.
set -euo pipefail

dir=/var/tmp/belay-local-cluster
stop_munge=0
keep_jobs=0
timeout=30

die() {
  echo "stop.sh: $*" >&2
  exit 1
}
while [ $# -gt 0 ]; do
  case $1 in
    --dir)
      if [ $# -lt 2 ] || [ -z "$2" ]; then die "--dir needs a value"; fi
      dir=$2; shift 2 ;;
    --munge) stop_munge=1; shift ;;
    --keep-jobs) keep_jobs=1; shift ;;
    --timeout)
      if [ $# -lt 2 ] || ! [[ $2 =~ ^[0-9]+$ ]]; then die "--timeout needs a number of seconds"; fi
      timeout=$2; shift 2 ;;
    -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
dir=${dir%/}
[ "$(id -u)" -eq 0 ] || die "must run as root (the daemons run as root)"
export PATH=$PATH:/usr/sbin:/sbin

# Prints the pid in $1 if that process is alive and really the daemon named $2.
live_pid() { # pidfile comm
  local pid
  [ -s "$1" ] || return 1
  pid=$(tr -dc 0-9 <"$1")
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$2" ] &&
    running "$pid" || return 1
  echo "$pid"
}

# Alive and not a zombie (an exited daemon whose parent has not reaped it yet).
running() { [ -r "/proc/$1/stat" ] && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$1/stat"; }

ctld_pid=$(live_pid "$dir/run/slurmctld.pid" slurmctld || true)

if [ "$keep_jobs" -eq 0 ] && [ -n "$ctld_pid" ] && [ -f "$dir/slurm.conf" ]; then
  export SLURM_CONF=$dir/slurm.conf
  jobs=$(squeue -h -o %i 2>/dev/null || true)
  if [ -n "$jobs" ]; then
    echo "stop.sh: cancelling jobs: $(tr '\n' ' ' <<<"$jobs")"
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null || true
    # Wait for running and completing jobs to be cleaned up by their slurmds. Jobs on nodes
    # whose slurmd is gone cannot complete; do not wait for those forever.
    deadline=$((SECONDS + timeout))
    while [ -n "$(squeue -h -t running,completing,configuring -o %i 2>/dev/null)" ] &&
      [ $SECONDS -lt $deadline ]; do
      sleep 1
    done
  fi
fi

# SIGTERM to every slurmd, then to slurmctld (it saves its state on the way out).
pids=()
names=()
for f in "$dir"/run/slurmd.*.pid; do
  [ -e "$f" ] || continue
  node=${f##*/slurmd.}
  node=${node%.pid}
  if pid=$(live_pid "$f" slurmd); then
    kill -TERM "$pid" && pids+=("$pid") && names+=("slurmd $node")
  fi
done
[ -n "$ctld_pid" ] && kill -TERM "$ctld_pid" && pids+=("$ctld_pid") && names+=("slurmctld")
if [ "$stop_munge" -eq 1 ]; then
  if pid=$(live_pid /run/munge/munged.pid munged); then
    kill -TERM "$pid" && pids+=("$pid") && names+=("munged")
  fi
fi
if [ ${#pids[@]} -eq 0 ]; then
  echo "stop.sh: nothing running in $dir"
  exit 0
fi
echo "stop.sh: stopping ${names[*]}"

deadline=$((SECONDS + timeout))
while :; do
  left=()
  for i in "${!pids[@]}"; do
    running "${pids[$i]}" && left+=("$i")
  done
  [ ${#left[@]} -eq 0 ] && break
  if [ $SECONDS -ge $deadline ]; then
    for i in "${left[@]}"; do
      echo "stop.sh: ${names[$i]} (pid ${pids[$i]}) still running after ${timeout}s; sending SIGKILL" >&2
      kill -KILL "${pids[$i]}" 2>/dev/null || true
    done
    sleep 1
    break
  fi
  sleep 0.5
done
echo "stop.sh: stopped"
