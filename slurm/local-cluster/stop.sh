#!/usr/bin/env bash
# Stop the local Slurm cluster that start.sh brought up, daemon by daemon through its pid file
# (never by process name: other Slurm or MariaDB instances on the machine are left alone).
#
#   slurm/local-cluster/stop.sh               # every daemon; the /etc/hosts lines and /etc/slurm link
#   slurm/local-cluster/stop.sh --purge       # the same, then $BASE (config, job state, logs, database)
#   slurm/local-cluster/stop.sh --keep-munge  # only the Slurm daemons (start.sh uses this on a config change)
#
# Without --purge, configuration, job state, logs and the accounting database stay under $BASE, so the
# next start keeps its job ids (sacct would otherwise mix old and new jobs of the same id).
set -uo pipefail

BASE=${LOCAL_SLURM_BASE:-${SLURM_TEST_BASE:-/tmp/local-slurm}}
HOSTS_MARK=$(cat "$BASE/hosts-mark" 2>/dev/null || echo "# local-slurm")   # start.sh wrote which lines are ours

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

# Compute nodes first (slurmd-nodeI.pid; slurmd.pid of the former one-node layout), then the
# controller, then accounting: nothing loses its peer mid-shutdown.
for pidfile in "$BASE"/run/slurmd-*.pid "$BASE"/run/slurmd.pid; do   # (not slurmdbd.pid)
  [ -e "$pidfile" ] && stop_daemon "$pidfile" slurmd
done
stop_daemon "$BASE/run/slurmctld.pid" slurmctld
stop_daemon "$BASE/run/slurmdbd.pid" slurmdbd
[ "${1:-}" = --keep-munge ] && exit 0
stop_daemon "$BASE/run/mariadb.pid" mariadbd
stop_daemon "$BASE/munge/munged.pid" munged

# What start.sh added outside $BASE: the node names (rewritten in place: /etc/hosts may be a bind
# mount) and the /etc/slurm/slurm.conf link, only when it still points into $BASE.
if grep -qF -- "$HOSTS_MARK" /etc/hosts 2>/dev/null; then
  kept=$(grep -vF -- "$HOSTS_MARK" /etc/hosts)
  printf '%s\n' "$kept" > /etc/hosts && echo "[local-slurm] removed the node names from /etc/hosts" >&2
fi
if [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$BASE/etc/slurm.conf" ]; then
  rm -f /etc/slurm/slurm.conf
  rmdir /etc/slurm 2>/dev/null || true
fi
if [ "${1:-}" = --purge ]; then
  rm -rf "$BASE" && echo "[local-slurm] removed $BASE" >&2
fi
exit 0
