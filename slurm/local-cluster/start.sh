#!/usr/bin/env bash
# Bring up a two-node Slurm cluster on loopback addresses for the tests and for trying `phi-hpc submit`
# locally: compute nodes node1 (127.0.0.2) and node2 (127.0.0.3), each its own slurmd with its own port,
# spool folder, fake GPUs and CPUs, on this one host.
#
#   slurm/local-cluster/start.sh      # idempotent: starts only what is not running yet
#   source /tmp/local-slurm/env.sh    # exports SLURM_CONF (a symlink in /etc/slurm makes this optional)
#
# Daemons: munged (auth), mariadbd + slurmdbd (accounting, so `sacct` answers: submitit asks sacct
# about jobs that have left the queue), slurmctld (controller on 127.0.0.1) and one `slurmd -N nodeI` per
# compute node (each advertising fake GPUs so GPU profiles schedule exactly as on a real cluster).
# Node names resolve through /etc/hosts lines this script adds (marked "# local-slurm"), so code that
# takes MASTER_ADDR from the node list reaches the right node; every address is in 127.0.0.0/8.
# Everything else (config, state, logs, database) lives under $BASE; stop.sh stops the daemons and
# removes the /etc/hosts lines and the /etc/slurm link again (--purge also removes $BASE).
#
# Knobs (environment variables):
#   LOCAL_SLURM_BASE      where everything lives            (default /tmp/local-slurm)
#   LOCAL_SLURM_NODES     compute nodes node1..nodeN        (default 2, at most 200)
#   LOCAL_SLURM_CPUS      CPUs each node advertises         (default: max(nproc, 4); more than nproc
#                         is allowed so that two 2-task test jobs can run side by side on each node)
#   LOCAL_SLURM_GPUS      fake GPUs on each node            (default 4)
#   LOCAL_SLURM_MAX_ARRAY_SIZE  the cluster's MaxArraySize  (default 4: small on purpose, so that a prepare
#                         plan of more shards runs as several arrays, as on a real cluster's limit)
#   LOCAL_SLURM_ACCOUNTING 1 = run mariadb+slurmdbd         (default 1); 0 = no accounting (sacct knows
#                         nothing, as on clusters without slurmdbd)
#   LOCAL_SLURM_MIN_JOB_AGE seconds Slurm keeps a finished job in memory (default 600; small values show
#                         what status/logs/cancel do once a job is purged)
#   LOCAL_SLURM_MEMORY_LIMITS 1 = memory is a consumable and a step over its request is killed
#                         (OUT_OF_MEMORY; jobacct_gather polls every second)   (default 0)
#   LOCAL_SLURM_WAIT      seconds to wait for each daemon   (default 60)
# A second cluster beside the first (tests of other Slurm setups) needs its own of each of these:
#   LOCAL_SLURM_BASE, LOCAL_SLURM_PREFIX (node names PREFIX1..N, default "node"), LOCAL_SLURM_ADDR_OFFSET
#   (PREFIXi gets 127.0.0.(OFFSET+i), default 1), LOCAL_SLURM_CTLD_PORT (6817), LOCAL_SLURM_NODE_PORT_BASE
#   (17000: PREFIXi listens on BASE+i), LOCAL_SLURM_DBD_PORT (6819), LOCAL_SLURM_DB_PORT (3307); its /etc/hosts
#   lines carry their own mark, and clients reach it with SLURM_CONF=$LOCAL_SLURM_BASE/etc/slurm.conf.
set -euo pipefail

BASE=${LOCAL_SLURM_BASE:-${SLURM_TEST_BASE:-/tmp/local-slurm}}
NPROC=$(nproc)
NODES=${LOCAL_SLURM_NODES:-2}
CPUS=${LOCAL_SLURM_CPUS:-$(( NPROC > 4 ? NPROC : 4 ))}
GPUS=${LOCAL_SLURM_GPUS:-4}
MAX_ARRAY_SIZE=${LOCAL_SLURM_MAX_ARRAY_SIZE:-4}
ACCOUNTING=${LOCAL_SLURM_ACCOUNTING:-1}
WAIT_S=${LOCAL_SLURM_WAIT:-60}
MIN_JOB_AGE=${LOCAL_SLURM_MIN_JOB_AGE:-600}
MEMORY_LIMITS=${LOCAL_SLURM_MEMORY_LIMITS:-0}
PREFIX=${LOCAL_SLURM_PREFIX:-node}
ADDR_OFFSET=${LOCAL_SLURM_ADDR_OFFSET:-1}
CTLD_PORT=${LOCAL_SLURM_CTLD_PORT:-6817}
HOST=$(hostname -s)
NODE_PORT_BASE=${LOCAL_SLURM_NODE_PORT_BASE:-17000}   # slurmd of nodeI listens on NODE_PORT_BASE + I
# The default cluster keeps its historical mark; another one gets its own (not containing this one, so
# that neither cluster's start/stop touches the other's lines).
if [ "$PREFIX" = node ]; then HOSTS_MARK="# local-slurm"; else HOSTS_MARK="# slurm-test-$PREFIX"; fi
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

ETC=$BASE/etc RUN=$BASE/run LOGS=$BASE/log MUNGE_DIR=$BASE/munge DB_DIR=$BASE/db
MUNGE_SOCKET=$MUNGE_DIR/munge.socket
DB_SOCKET=$DB_DIR/mysqld.sock
DB_PORT=${LOCAL_SLURM_DB_PORT:-3307} DBD_PORT=${LOCAL_SLURM_DBD_PORT:-6819}
export SLURM_CONF=$ETC/slurm.conf

say() { echo "[local-slurm] $*" >&2; }

node_names() { seq -f "$PREFIX%g" 1 "$NODES"; }
node_index() { echo "${1#"$PREFIX"}"; }
node_addr() { echo "127.0.0.$(( $(node_index "$1") + ADDR_OFFSET ))"; }   # node1 -> 127.0.0.2: .1 is the controller's

# A daemon counts as running when its pid file names a live, non-zombie process with the right name
# (pid files survive reboots and containers reuse pids, so the name check matters).
is_running() {  # pidfile process-name
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && grep -q "$2" "/proc/$pid/comm" 2>/dev/null \
    && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]
}

wait_until() {  # description command...  (deadline in seconds: a failing probe may itself be slow)
  local what=$1 deadline=$(( $(date +%s) + WAIT_S )); shift
  while [ "$(date +%s)" -lt "$deadline" ]; do
    timeout 10 "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  say "gave up waiting for $what after ${WAIT_S}s; logs in $LOGS"
  exit 1
}

install_missing_packages() {
  # binary:debian-package pairs; a fresh CI machine has none of them.
  local wanted="munged:munge slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client"
  [ "$ACCOUNTING" = 1 ] && wanted="$wanted slurmdbd:slurmdbd mariadbd:mariadb-server"
  local missing="" pair
  for pair in $wanted; do
    command -v "${pair%%:*}" >/dev/null || missing="$missing ${pair#*:}"
  done
  [ -z "$missing" ] && return 0
  say "apt-get install:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

prepare_directories() {
  [ "$NODES" -ge 1 ] && [ $(( NODES + ADDR_OFFSET )) -le 254 ] \
    || { say "LOCAL_SLURM_NODES + LOCAL_SLURM_ADDR_OFFSET must stay within 127.0.0.254 ($NODES + $ADDR_OFFSET)"; exit 2; }
  mkdir -p "$ETC" "$RUN" "$LOGS" "$BASE/state" "$MUNGE_DIR" "$BASE/fakegpu"
  local name
  for name in $(node_names); do mkdir -p "$BASE/spool/$name"; done
  chmod 755 "$MUNGE_DIR"   # munged refuses a socket directory others cannot traverse
  if [ ! -s "$MUNGE_DIR/munge.key" ]; then
    head -c 1024 /dev/urandom > "$MUNGE_DIR/munge.key"
  fi
  chmod 400 "$MUNGE_DIR/munge.key"
  # Slurm only accepts a GPU GRES that names device files; without them the node goes INVAL.
  # Character device 1,3 is /dev/null: harmless if anything opens it. Plain files if mknod is denied.
  local i
  for i in $(seq 0 $(( NODES * GPUS - 1 ))); do
    [ -e "$BASE/fakegpu/nvidia$i" ] || mknod "$BASE/fakegpu/nvidia$i" c 1 3 2>/dev/null \
      || touch "$BASE/fakegpu/nvidia$i"
  done
}

write_slurm_conf() {
  local mem_mb accounting_lines overrides="" gres="" select="CR_CPU" memory_lines=""
  # Advertise 80% of RAM (whole GiB) so slurmd does not drain the node for "low memory".
  mem_mb=$(awk '/MemTotal/ {m = int($2 / 1024 * 0.8 / 1024) * 1024; print (m < 1024 ? 1024 : m)}' /proc/meminfo)
  if [ "$ACCOUNTING" = 1 ]; then
    # AccountingStoragePass is, for munge auth, the munge socket clients (sacct, sacctmgr) must use
    # to reach slurmdbd; without it they look for the system socket in /run/munge and fail.
    accounting_lines="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$MUNGE_SOCKET"
  else
    accounting_lines="AccountingStorageType=accounting_storage/none"
  fi
  [ "$CPUS" -gt "$NPROC" ] && overrides="SlurmdParameters=config_overrides"
  if [ "$MEMORY_LIMITS" = 1 ]; then
    select="CR_CPU_Memory"
    memory_lines="JobAcctGatherParams=OverMemoryKill
JobAcctGatherFrequency=task=1"
  fi
  [ "$GPUS" -gt 0 ] && gres="Gres=gpu:$GPUS"
  mem_mb=$(( mem_mb / NODES / 1024 * 1024 )); [ "$mem_mb" -ge 512 ] || mem_mb=512   # the nodes share the RAM
  cat <<EOF
# Generated by slurm/local-cluster/start.sh - edits are overwritten.
ClusterName=${LOCAL_SLURM_CLUSTER_NAME:-local}
SlurmctldHost=$HOST(127.0.0.1)$([ "$CTLD_PORT" = 6817 ] || printf '\nSlurmctldPort=%s' "$CTLD_PORT")
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
StateSaveLocation=$BASE/state
# %n = the node name of \`slurmd -N NAME\`: several slurmd on one host need their own spool, pid and log.
SlurmdSpoolDir=$BASE/spool/%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=$select
# Short scheduling intervals: dependent jobs start seconds after their parent ends.
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=5,sched_interval=5
JobAcctGatherType=jobacct_gather/linux$([ -z "$memory_lines" ] || printf '\n%s' "$memory_lines")
JobCompType=jobcomp/filetxt
JobCompLoc=$LOGS/jobcomp.txt
$accounting_lines
MpiDefault=none
ReturnToService=2
# Seconds between SIGTERM and SIGKILL: room for the trainer to checkpoint on scancel/requeue.
KillWait=10
MinJobAge=$MIN_JOB_AGE
MaxArraySize=$MAX_ARRAY_SIZE
InactiveLimit=0
GresTypes=gpu
$overrides
$(for name in $(node_names); do
  echo "NodeName=$name NodeHostname=$HOST NodeAddr=$(node_addr "$name") Port=$(( NODE_PORT_BASE + $(node_index "$name") ))" \
       "CPUs=$CPUS RealMemory=$mem_mb $gres State=UNKNOWN"
done)
PartitionName=debug Nodes=$PREFIX[1-$NODES] Default=YES MaxTime=INFINITE State=UP
EOF
}

write_gres_conf() {
  echo "AutoDetect=off"
  [ "$GPUS" -gt 0 ] || return 0
  local name first
  for name in $(node_names); do   # each node its own device files: nodeI gets nvidia[(I-1)*G .. I*G-1]
    first=$(( ($(node_index "$name") - 1) * GPUS ))
    echo "NodeName=$name Name=gpu File=$BASE/fakegpu/nvidia[$first-$(( first + GPUS - 1 ))]"
  done
}

write_slurmdbd_conf() {
  cat <<EOF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
EOF
}

# Replace a config file only when its content changes, so a second start.sh is a no-op and
# running daemons are restarted only when they would otherwise use a stale config.
CONFIG_CHANGED=0
NODES_CHANGED=0
install_config() {  # name generator
  local target=$ETC/$1
  "$2" > "$target.new"
  if cmp -s "$target.new" "$target"; then
    rm -f "$target.new"
  else
    mv "$target.new" "$target"
    CONFIG_CHANGED=1
  fi
}

write_configs() {
  local old_nodes
  old_nodes=$(grep -o '^NodeName=[^ ]*' "$ETC/slurm.conf" 2>/dev/null || true)
  install_config slurm.conf write_slurm_conf
  [ "$old_nodes" = "$(grep -o '^NodeName=[^ ]*' "$ETC/slurm.conf")" ] || NODES_CHANGED=1
  install_config gres.conf write_gres_conf
  install_config slurmdbd.conf write_slurmdbd_conf
  chmod 600 "$ETC/slurmdbd.conf"   # slurmdbd refuses a world-readable config (it holds a password)
  echo "export SLURM_CONF=$ETC/slurm.conf" > "$BASE/env.sh"
  echo "$HOSTS_MARK" > "$BASE/hosts-mark"   # for stop.sh
  # Plain `sbatch`/`squeue` in a shell that never sourced env.sh look in /etc/slurm: point them here.
  if [ ! -e /etc/slurm/slurm.conf ]; then
    mkdir -p /etc/slurm
    ln -sf "$ETC/slurm.conf" /etc/slurm/slurm.conf
  fi
}

# "127.0.0.2 node1 # local-slurm": rewrite /etc/hosts in place (it may be a bind mount, so no rename),
# and only when a line is missing or stale.
add_hosts_entries() {
  local wanted name current
  wanted=$(for name in $(node_names); do echo "$(node_addr "$name") $name $HOSTS_MARK"; done)
  current=$(grep -F "$HOSTS_MARK" /etc/hosts || true)
  [ "$current" = "$wanted" ] && return 0
  { grep -vF "$HOSTS_MARK" /etc/hosts || true; echo "$wanted"; } > "$BASE/hosts.new"
  cat "$BASE/hosts.new" > /etc/hosts && rm -f "$BASE/hosts.new"
  say "node names in /etc/hosts: $(echo "$wanted" | awk '{printf "%s=%s ", $2, $1}')"
}

start_munge() {
  if ! is_running "$MUNGE_DIR/munged.pid" munged; then
    say "starting munged"
    munged --key-file="$MUNGE_DIR/munge.key" --socket="$MUNGE_SOCKET" --pid-file="$MUNGE_DIR/munged.pid" \
           --log-file="$LOGS/munged.log" --seed-file="$MUNGE_DIR/munged.seed"
  fi
  wait_until munged munge -n -S "$MUNGE_SOCKET"
}

start_accounting() {
  [ "$ACCOUNTING" = 1 ] || return 0
  if ! is_running "$RUN/mariadb.pid" mariadbd; then
    if [ ! -d "$DB_DIR/data/mysql" ]; then
      say "creating the accounting database"
      mariadb-install-db --datadir="$DB_DIR/data" --user=root --auth-root-authentication-method=socket \
        --skip-test-db > "$LOGS/mariadb-install.log" 2>&1
    fi
    say "starting mariadbd on 127.0.0.1:$DB_PORT"
    # setsid: the database must outlive the shell (and CI step) that started it.
    setsid mariadbd --no-defaults --datadir="$DB_DIR/data" --socket="$DB_SOCKET" --port=$DB_PORT \
      --bind-address=127.0.0.1 --pid-file="$RUN/mariadb.pid" --user=root --log-error="$LOGS/mariadb.log" \
      --innodb-buffer-pool-size=64M </dev/null >/dev/null 2>&1 &
    wait_until mariadbd mariadb-admin --socket="$DB_SOCKET" ping
    local host
    for host in localhost 127.0.0.1; do
      mariadb --socket="$DB_SOCKET" -e "CREATE USER IF NOT EXISTS 'slurm'@'$host' IDENTIFIED BY 'slurmpw';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'$host';"
    done
  fi
  if ! is_running "$RUN/slurmdbd.pid" slurmdbd; then
    say "starting slurmdbd"
    slurmdbd
  fi
  wait_until slurmdbd sacctmgr -n list cluster
}

start_slurm() {
  is_running "$RUN/slurmctld.pid" slurmctld || { say "starting slurmctld"; slurmctld; }
  local name
  for name in $(node_names); do
    is_running "$RUN/slurmd-$name.pid" slurmd || { say "starting slurmd -N $name"; slurmd -N "$name"; }
  done
}

# A node comes up "unknown", then idle; after an unclean stop it may be down/drained: resume it.
wait_for_idle_nodes() {
  local name state="" started deadline=$(( $(date +%s) + WAIT_S ))
  started=$(date +%s%N)
  for name in $(node_names); do
    while :; do
      state=$(timeout 10 sinfo -h -N -n "$name" -o %T 2>/dev/null | head -1 || true)
      case "$state" in
        idle*|mixed*|allocated*|completing*) break ;;
        down*|drain*|inval*) scontrol update nodename="$name" state=resume >/dev/null 2>&1 || true ;;
      esac
      if [ "$(date +%s)" -ge "$deadline" ]; then
        say "node $name still '$state' after ${WAIT_S}s; last log lines:"
        tail -n 5 "$LOGS"/slurm*.log >&2
        exit 1
      fi
      sleep 0.1
    done
  done
  say "nodes $(node_names | paste -sd, -) up ($(( ($(date +%s%N) - started) / 1000000 )) ms); SLURM_CONF=$SLURM_CONF"
}

any_slurm_daemon_running() {
  local pidfile
  for pidfile in "$RUN"/slurmd-*.pid; do is_running "$pidfile" slurmd && return 0; done
  is_running "$RUN/slurmctld.pid" slurmctld || is_running "$RUN/slurmdbd.pid" slurmdbd
}

install_missing_packages
prepare_directories
write_configs
if [ "$CONFIG_CHANGED" = 1 ] && any_slurm_daemon_running; then
  say "configuration changed: restarting the Slurm daemons"
  "$HERE/stop.sh" --keep-munge
fi
if [ "$NODES_CHANGED" = 1 ]; then
  # slurmctld would otherwise restore the old nodes (and their names) from its state files.
  rm -f "$BASE/state/node_state" "$BASE/state/node_state.old"
fi
add_hosts_entries
start_munge
start_accounting
start_slurm
wait_for_idle_nodes
