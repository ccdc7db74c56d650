#!/usr/bin/env bash
# A throw-away Slurm cluster on this one machine: two nodes (n1, n2), one slurmctld, root daemons,
# all state under one directory. Used by tests/slurm/ and by anyone who wants to try the Slurm path
# on a laptop (Debian/Ubuntu, root or sudo).
#
#   scripts/slurm_test_cluster.sh start [STATE_DIR]   install Slurm + munge if missing, start, wait until ready
#   scripts/slurm_test_cluster.sh stop  [STATE_DIR]   cancel jobs, stop the daemons (state stays for reading)
#   scripts/slurm_test_cluster.sh status [STATE_DIR]
#   scripts/slurm_test_cluster.sh install             only install the packages
#
# STATE_DIR defaults to $SLURM_TEST_DIR, else /tmp/slurm-test. After `start`, point the client tools at it:
#   export SLURM_CONF=STATE_DIR/slurm.conf
# Ports: SLURM_TEST_PORTS="CTLD N1 N2" (slurmctld, slurmd n1, slurmd n2; tests pass ports the OS found free),
# else slurmctld on $SLURM_TEST_PORT (default 6817) and slurmd n1/n2 on the next two.
# Tuned for tests: credentials expire after 5 s and the scheduler runs every 2 s, so a requeued job
# restarts within seconds instead of ~2 minutes.
set -euo pipefail

cmd=${1:-start}
STATE=${2:-${SLURM_TEST_DIR:-/tmp/slurm-test}}
PORT=${SLURM_TEST_PORT:-6817}
read -r -a PORTS <<<"${SLURM_TEST_PORTS:-$PORT $((PORT + 1)) $((PORT + 2))}"
((${#PORTS[@]} == 3)) || { echo "slurm_test_cluster: error: SLURM_TEST_PORTS needs 3 ports, got '${SLURM_TEST_PORTS:-}'" >&2; exit 1; }
NODES=(n1 n2)
HOST=$(hostname -s)
CONF="$STATE/slurm.conf"
export SLURM_CONF="$CONF"

log() { echo "slurm_test_cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        die "needs root (or sudo) for: $*"; fi
}

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null; then
        return 0
    fi
    command -v apt-get >/dev/null || die "Slurm is not installed and apt-get is not available; install slurmctld, slurmd, slurm-client and munge"
    log "installing slurmctld slurmd slurm-client munge (apt-get)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
}

pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null; }

write_conf() {
    mkdir -p "$STATE"/{munge,ctld,log,spool}
    chmod 755 "$STATE"
    : >"$STATE/plugstack.conf"
    cat >"$CONF" <<EOF
# Written by scripts/slurm_test_cluster.sh: a two-node test cluster on one host.
ClusterName=testcluster
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=${PORTS[0]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE/munge/munge.socket,cred_expire=5
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool/%n
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd-%n.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd-%n.log
PlugStackConfig=$STATE/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
SlurmctldDebug=info
SlurmdDebug=info
EOF
    local i=1
    for n in "${NODES[@]}"; do
        echo "NodeName=$n NodeHostname=$HOST NodeAddr=127.0.0.1 Port=${PORTS[i]} CPUs=2 State=UNKNOWN" >>"$CONF"
        i=$((i + 1))
    done
    echo "PartitionName=debug Nodes=$(IFS=,; echo "${NODES[*]}") Default=YES MaxTime=INFINITE State=UP" >>"$CONF"
}

hosts_entries() {
    # Node names must resolve (srun, scontrol show hostnames): map them to this host.
    for n in "${NODES[@]}"; do
        grep -Eq "^127\.0\.0\.1[[:space:]].*\b$n\b" /etc/hosts || echo "127.0.0.1 $n" | as_root tee -a /etc/hosts >/dev/null
    done
}

start_munge() {
    pid_alive "$STATE/munge/munged.pid" && return 0
    local key="$STATE/munge/munge.key"
    [[ -f $key ]] || { dd if=/dev/urandom of="$key" bs=1024 count=1 status=none; chmod 400 "$key"; }
    chmod 700 "$STATE/munge"
    as_root munged --force --key-file="$key" --socket="$STATE/munge/munge.socket" \
        --pid-file="$STATE/munge/munged.pid" --log-file="$STATE/log/munged.log" --seed-file="$STATE/munge/munge.seed"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
    [[ $(uname -s) == Linux ]] || die "this script runs a Linux test cluster"
    install
    if pid_alive "$STATE/slurmctld.pid"; then
        log "already running (SLURM_CONF=$CONF)"; wait_ready; return 0
    fi
    for p in "${PORTS[@]}"; do
        port_busy "$p" && die "port $p is in use (another Slurm?); set SLURM_TEST_PORTS to three free ports"
    done
    write_conf
    hosts_entries
    start_munge
    # -c: start clean (no jobs from an earlier cluster in this state dir).
    as_root slurmctld -c -f "$CONF"
    for n in "${NODES[@]}"; do
        mkdir -p "$STATE/spool/$n"
        as_root slurmd -f "$CONF" -N "$n"
    done
    wait_ready
    log "ready: export SLURM_CONF=$CONF"
}

wait_ready() {
    # sinfo can say idle before slurmd re-registered: a real two-node step is the check.
    local deadline=$((SECONDS + ${SLURM_TEST_READY_TIMEOUT:-60}))
    until timeout 20 srun -N2 -t 1 true >/dev/null 2>&1; do
        if ((SECONDS > deadline)); then
            sinfo -N -l >&2 || true
            tail -n 20 "$STATE/log/slurmctld.log" >&2 || true
            die "cluster not ready after ${SLURM_TEST_READY_TIMEOUT:-60}s (logs in $STATE/log)"
        fi
        scontrol update NodeName="$(IFS=,; echo "${NODES[*]}")" State=RESUME >/dev/null 2>&1 || true
        sleep 1
    done
}

stop() {
    [[ -f $CONF ]] || { log "nothing to stop in $STATE"; return 0; }
    if pid_alive "$STATE/slurmctld.pid"; then
        scancel --full --quiet -u "$(id -un)" 2>/dev/null || true
        scancel --quiet -u root 2>/dev/null || true
    fi
    local pidfiles=("$STATE/slurmctld.pid" "$STATE"/slurmd-*.pid "$STATE/munge/munged.pid")
    for f in "${pidfiles[@]}"; do
        pid_alive "$f" && as_root kill "$(cat "$f" 2>/dev/null)" 2>/dev/null || true
    done
    for _ in $(seq 50); do
        local alive=0
        for f in "${pidfiles[@]}"; do pid_alive "$f" && alive=1; done
        ((alive == 0)) && break
        sleep 0.2
    done
    for f in "${pidfiles[@]}"; do pid_alive "$f" && as_root kill -9 "$(cat "$f" 2>/dev/null)" 2>/dev/null || true; done
    log "stopped ($STATE)"
}

status() {
    local f
    for f in "$STATE/slurmctld.pid" "$STATE"/slurmd-*.pid "$STATE/munge/munged.pid"; do
        if pid_alive "$f"; then echo "$(basename "$f" .pid): running ($(cat "$f"))"; else echo "$(basename "$f" .pid): stopped"; fi
    done
    pid_alive "$STATE/slurmctld.pid" && sinfo -N
}

case $cmd in
    install) install ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) die "usage: $0 start|stop|status|install [STATE_DIR]" ;;
esac
