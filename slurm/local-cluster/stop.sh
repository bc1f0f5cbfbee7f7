#!/usr/bin/env bash
# Stop the local Slurm cluster that start.sh brought up, daemon by daemon through its pid file
# (never by process name: other Slurm or MariaDB instances on the machine are left alone).
#
#   slurm/local-cluster/stop.sh               # everything
#   slurm/local-cluster/stop.sh --keep-munge  # only the Slurm daemons (start.sh uses this on a config change)
#
# Configuration, job state, logs and the accounting database stay under $BASE for the next start.
set -uo pipefail

BASE=${LOCAL_SLURM_BASE:-${SLURM_TEST_BASE:-/tmp/local-slurm}}

alive() {  # pid
  kill -0 "$1" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

stop_daemon() {  # pidfile process-name
  local pidfile=$1 name=$2 pid
  [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if alive "$pid" && grep -q "$name" "/proc/$pid/comm" 2>/dev/null; then
    kill -TERM "$pid"
    # Give it 10 s to shut down cleanly (slurmctld saves its state), then insist.
    for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then
      echo "[local-slurm] $name ($pid) ignored SIGTERM; sending SIGKILL" >&2
      kill -KILL "$pid"
    fi
    echo "[local-slurm] stopped $name ($pid)" >&2
  fi
  rm -f "$pidfile"
}

# Compute node first, then the controller, then accounting: nothing loses its peer mid-shutdown.
stop_daemon "$BASE/run/slurmd.pid" slurmd
stop_daemon "$BASE/run/slurmctld.pid" slurmctld
stop_daemon "$BASE/run/slurmdbd.pid" slurmdbd
[ "${1:-}" = --keep-munge ] && exit 0
stop_daemon "$BASE/run/mariadb.pid" mariadbd
stop_daemon "$BASE/munge/munged.pid" munged
exit 0
