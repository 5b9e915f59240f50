#!/usr/bin/env bash
# Starts a real Slurm cluster of N virtual nodes on this one Debian 12 machine, from Debian's
# packages (Slurm 22.05, MUNGE): one slurmctld and one `slurmd -N nX` per virtual node, all on
# loopback, all running as root, with every state, spool, pid and log file under DIR.
#
#   deploy/local-cluster/start.sh [--nodes N] [--dir DIR] [--cpus-per-node C]
#                                 [--port-base P] [--ctld-port P] [--timeout S]
#
# Installs what is missing (slurmctld slurmd slurm-client munge), creates a MUNGE key if there
# is none, starts munged if it is not running, writes DIR/slurm.conf, starts the daemons that
# are not running (found by their pid files in DIR/run) and waits until every node is up.
# Running it again while the cluster is up changes nothing; after a slurmd died it starts just
# that one again. It ends by printing the `export SLURM_CONF=...` line (also in DIR/env.sh).
# Stop the cluster with deploy/local-cluster/stop.sh.
set -euo pipefail

nodes=3
dir=/var/tmp/belay-local-cluster
cpus=2
ctld_port=6817
port_base=17000 # node nX listens on port_base + X
timeout=90

usage() {
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}
die() {
  echo "start.sh: $*" >&2
  exit 1
}
need_value() { if [ $# -lt 2 ] || [ -z "$2" ]; then die "$1 needs a value (see --help)"; fi; }
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

while [ $# -gt 0 ]; do
  case $1 in
    --nodes) need_value "$@"; nodes=$2; shift 2 ;;
    --dir) need_value "$@"; dir=$2; shift 2 ;;
    --cpus-per-node) need_value "$@"; cpus=$2; shift 2 ;;
    --port-base) need_value "$@"; port_base=$2; shift 2 ;;
    --ctld-port) need_value "$@"; ctld_port=$2; shift 2 ;;
    --timeout) need_value "$@"; timeout=$2; shift 2 ;;
    -h | --help) usage 0 ;;
    *) echo "start.sh: unknown argument: $1" >&2; usage 2 ;;
  esac
done
for v in nodes cpus port_base ctld_port timeout; do
  is_uint "${!v}" || die "--${v//_/-} must be a non-negative integer, got '${!v}'"
done
[ "$nodes" -ge 1 ] || die "--nodes must be at least 1"
[ "$cpus" -ge 1 ] || die "--cpus-per-node must be at least 1"
[ $((port_base + nodes)) -le 65535 ] || die "--port-base $port_base + $nodes nodes exceeds 65535"
if [ "$ctld_port" -gt "$port_base" ] && [ "$ctld_port" -le $((port_base + nodes)) ]; then
  die "--ctld-port $ctld_port collides with the node ports $((port_base + 1))..$((port_base + nodes))"
fi
case $dir in /*) ;; *) dir=$PWD/$dir ;; esac
dir=${dir%/}

[ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and runs the Slurm daemons as root)"

# --- 1. packages -------------------------------------------------------------------------
packages=(slurmctld slurmd slurm-client munge)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "start.sh: installing ${missing[*]}"
  apt-get update -q
  # The packages' maintainer scripts may try to start the daemons with the system-wide
  # configuration (/etc/slurm/slurm.conf, which does not exist); that fails harmlessly.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
for b in slurmctld slurmd sinfo scontrol munged munge unmunge; do
  command -v "$b" >/dev/null || [ -x "/usr/sbin/$b" ] || die "$b not found after installing ${packages[*]}"
done
export PATH=$PATH:/usr/sbin:/sbin

# Alive (not a zombie) and really the daemon named $2: guards against a stale pid file whose
# pid was reused.
pid_alive() { # pidfile comm
  local pid
  [ -s "$1" ] || return 1
  pid=$(tr -dc 0-9 <"$1")
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$2" ] &&
    ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$pid/stat"
}

# --- 2. MUNGE ----------------------------------------------------------------------------
key=/etc/munge/munge.key
if [ ! -s "$key" ]; then
  echo "start.sh: creating $key"
  install -d -o munge -g munge -m 0700 /etc/munge
  if command -v mungekey >/dev/null || [ -x /usr/sbin/mungekey ]; then
    mungekey --create --keyfile="$key" --force
  else
    dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
  fi
  chown munge:munge "$key"
  chmod 0400 "$key"
fi
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
munge_pidfile=/run/munge/munged.pid
# A munged that answers is used whoever started it (e.g. systemd on a machine that has it).
if ! munge_ok && ! pid_alive "$munge_pidfile" munged; then
  echo "start.sh: starting munged"
  # munged refuses to run with loose permissions on its directories; the package creates
  # them, but /run is often a fresh tmpfs.
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
  # No init system is assumed: start the daemon directly as the munge user (it forks).
  runuser -u munge -- /usr/sbin/munged --pid-file="$munge_pidfile" ||
    die "munged failed to start; see /var/log/munge/munged.log"
fi
for _ in $(seq 50); do
  munge_ok && break
  sleep 0.2
done
munge -n | unmunge >/dev/null || die "munge -n | unmunge fails; see /var/log/munge/munged.log"

# --- 3. configuration --------------------------------------------------------------------
host=$(hostname -s)
[ -n "$host" ] || die "hostname -s is empty"
conf=$dir/slurm.conf
mkdir -p "$dir"/{state,spool,run,log}
chmod 0755 "$dir"

new_conf=$(mktemp "$dir/.slurm.conf.XXXXXX")
trap 'rm -f "$new_conf"' EXIT
{
  cat <<EOF
# Written by deploy/local-cluster/start.sh: $nodes virtual nodes on host $host, all on loopback.
ClusterName=belay-local
# The controller's address is given explicitly so that nothing depends on how this host's
# name resolves: everything talks over loopback.
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge

StateSaveLocation=$dir/state
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmctldLogFile=$dir/log/slurmctld.log
# %n is the virtual node's name: each slurmd gets its own spool, pid and log file.
SlurmdSpoolDir=$dir/spool/%n
SlurmdPidFile=$dir/run/slurmd.%n.pid
SlurmdLogFile=$dir/log/slurmd.%n.log
SlurmctldDebug=info
SlurmdDebug=info

# No cgroups: containers rarely give a usable cgroup hierarchy. linuxproc tracks a job's
# processes by parentage, task/none binds nothing. Several slurmds share the real cores.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# Take the CPUs below as given instead of what slurmd detects (2 real cores may carry
# several virtual nodes with several CPUs each, i.e. ranks are oversubscribed).
SlurmdParameters=config_overrides
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# No slurmdbd, so no sacct: each finished job's end state also goes to this file.
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.log

# A killed slurmd makes its node "down*" after SlurmdTimeout plus up to one ping interval
# (about 45 s here), and its jobs end in NODE_FAIL; a slurmd that registers again returns
# its node to service on its own.
SlurmdTimeout=30
SlurmctldTimeout=30
ReturnToService=2
# Jobs hit by a node failure end in NODE_FAIL instead of being requeued by Slurm (the default,
# JobRequeue=1, puts them back to PENDING with Restarts=1): the submitter decides what to
# rerun and where. sbatch --requeue still asks for requeueing per job.
JobRequeue=0
# Finished jobs stay visible to scontrol show job and squeue for 10 minutes, long enough
# for a poller to see their end state.
MinJobAge=600
KillWait=10
InactiveLimit=0
Waittime=0
# There is no mail program; the default one logs an error at every start.
MailProg=/bin/true

EOF
  for i in $(seq "$nodes"); do
    echo "NodeName=n$i NodeHostname=$host NodeAddr=127.0.0.1 Port=$((port_base + i)) CPUs=$cpus State=UNKNOWN"
  done
  echo "PartitionName=debug Nodes=n[1-$nodes] Default=YES MaxTime=INFINITE State=UP"
} >"$new_conf"

any_running() {
  pid_alive "$dir/run/slurmctld.pid" slurmctld && return 0
  local f
  for f in "$dir"/run/slurmd.*.pid; do
    [ -e "$f" ] && pid_alive "$f" slurmd && return 0
  done
  return 1
}
settings() { grep -v -e '^#' -e '^$' "$1"; }
if [ -f "$conf" ] && cmp -s "$conf" "$new_conf"; then
  rm -f "$new_conf"
elif [ -f "$conf" ] && cmp -s <(settings "$conf") <(settings "$new_conf"); then
  mv "$new_conf" "$conf" # only comments changed
  chmod 0644 "$conf"
elif any_running; then
  diff -u "$conf" "$new_conf" >&2 || true
  die "the cluster in $dir is running with a different configuration (above); run deploy/local-cluster/stop.sh --dir $dir first"
else
  mv "$new_conf" "$conf"
  chmod 0644 "$conf"
fi
trap - EXIT
echo "export SLURM_CONF=$conf" >"$dir/env.sh"
export SLURM_CONF=$conf

# --- 4. daemons --------------------------------------------------------------------------
logtails() {
  local f
  for f in "$dir/log/slurmctld.log" "$dir"/log/slurmd.*.log; do
    [ -f "$f" ] || continue
    echo "---- tail $f" >&2
    tail -n 15 "$f" >&2
  done
}
if pid_alive "$dir/run/slurmctld.pid" slurmctld; then
  echo "start.sh: slurmctld already running (pid $(cat "$dir/run/slurmctld.pid"))"
else
  echo "start.sh: starting slurmctld"
  # slurmctld daemonizes and writes its pid file itself; it recovers jobs and node states
  # saved in $dir/state by an earlier run (-c: there is none yet, start clean).
  clean=()
  [ -n "$(ls -A "$dir/state")" ] || clean=(-c)
  slurmctld -f "$conf" "${clean[@]}" || { logtails; die "slurmctld failed to start"; }
fi
for i in $(seq "$nodes"); do
  if pid_alive "$dir/run/slurmd.n$i.pid" slurmd; then
    echo "start.sh: slurmd n$i already running (pid $(cat "$dir/run/slurmd.n$i.pid"))"
  else
    echo "start.sh: starting slurmd n$i (port $((port_base + i)))"
    mkdir -p "$dir/spool/n$i"
    # -N: this slurmd is virtual node nX (Debian builds Slurm with multiple-slurmd support);
    # it daemonizes and writes $dir/run/slurmd.nX.pid.
    slurmd -f "$conf" -N "n$i" || { logtails; die "slurmd n$i failed to start"; }
  fi
done

# Every node up: idle, or busy with jobs when start.sh is run again on a working cluster.
# A "*" suffix means not responding; down/drain/fail states are not up.
echo "start.sh: waiting up to ${timeout}s for $nodes nodes to come up"
deadline=$((SECONDS + timeout))
while :; do
  states=$(sinfo -h -N -p debug -o '%N %T' 2>/dev/null | sort -u || true)
  up=$(awk '$2 ~ /^(idle|allocated|mixed|completing)$/' <<<"$states" | wc -l)
  if ! pid_alive "$dir/run/slurmctld.pid" slurmctld; then
    logtails
    die "slurmctld is not running (it exited after starting?); see $dir/log/slurmctld.log"
  fi
  # Make sure the answer came from this cluster's slurmctld, not another one on the port.
  if [ "$up" -eq "$nodes" ]; then
    state_dir=$(scontrol show config 2>/dev/null | awk '$1 == "StateSaveLocation" {print $3}')
    [ "$state_dir" = "$dir/state" ] && break
    [ -z "$state_dir" ] ||
      die "port $ctld_port is answered by another slurmctld (state in $state_dir); use --ctld-port"
  fi
  if [ $SECONDS -ge $deadline ]; then
    echo "start.sh: nodes not all up after ${timeout}s; sinfo says:" >&2
    echo "${states:-(no answer from slurmctld)}" >&2
    logtails
    exit 1
  fi
  sleep 1
done
sinfo
echo
echo "Cluster up: $nodes nodes, slurm.conf in $dir. To use it:"
echo "export SLURM_CONF=$conf"
