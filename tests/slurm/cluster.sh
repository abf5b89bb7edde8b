#!/usr/bin/env bash
# A SLURM cluster of 3 virtual nodes (n1-n3, 2 CPUs each) on this one machine, for the tests in
# tests/slurm and for trying RHAPSODY under a batch system (docs/hpc.md).
#
#   tests/slurm/cluster.sh start    install what is missing (apt), start munge and the daemons,
#                                   wait until every node is idle; prints `export SLURM_CONF=...`
#   tests/slurm/cluster.sh stop     cancel every job, stop the daemons (and munged if this script
#                                   started it); leaves no daemon, no job, no job process
#   tests/slurm/cluster.sh status   exit 0 when the cluster is up and its nodes answer
#
# Everything lives in $RHAPSODY_SLURM_DIR (default /tmp/rhapsody-slurm): slurm.conf, state,
# spool, logs. /etc/slurm is not touched: clients find the cluster through SLURM_CONF.
# Needs root (slurmd runs jobs as their users) and Debian's slurm-wlm, built with
# --enable-multiple-slurmd (one `slurmd -N nX` per virtual node, each on its own port).
set -euo pipefail

DIR=${RHAPSODY_SLURM_DIR:-/tmp/rhapsody-slurm}
CONF=$DIR/slurm.conf
NODES=(n1 n2 n3)
CPUS=2
# The notes measured 4096 MB per job rejected above this; it also bounds dask workers' memory.
MEMORY_MB=4000
CTLD_PORT=${RHAPSODY_SLURM_PORT:-16817}
FIRST_SLURMD_PORT=$((CTLD_PORT + 1))
PACKAGES=(slurm-wlm munge)

say() { echo "cluster.sh: $*" >&2; }
die() { say "$*"; exit 1; }

install_missing() {
    local missing=()
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 || die "${missing[*]} missing and no apt-get here"
    say "installing ${missing[*]}"
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$DIR/apt.log" 2>&1 ||
        die "apt-get install ${missing[*]} failed (see $DIR/apt.log)"
}

# Run "$@" with every descriptor above 2 closed.
run_closed() {
    (
        for fd in /proc/self/fd/*; do
            fd=${fd##*/}
            [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-"
        done
        exec "$@"
    )
}

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    munge_works && return 0
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown -R munge:munge /etc/munge && chmod 0700 /etc/munge && chmod 0400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    # The daemon must not inherit the caller's descriptors beyond stdio (a `flock` lock, a
    # pipe a test reads to its end): munged keeps what it is given for as long as it runs.
    run_closed runuser -u munge -- /usr/sbin/munged || die "munged did not start"
    # Only a munged this script started is stopped by `stop`.
    cp /run/munge/munged.pid "$DIR/munged.pid" 2>/dev/null || true
    for _ in $(seq 50); do munge_works && return 0; sleep 0.1; done
    die "munged started but munge -n | unmunge fails"
}

write_conf() {
    local host last_port
    host=$(hostname -s)
    last_port=$((FIRST_SLURMD_PORT + ${#NODES[@]} - 1))
    mkdir -p "$DIR/state" "$DIR/log"
    for node in "${NODES[@]}"; do mkdir -p "$DIR/spool/$node"; done
    # Stand-ins for 2 GPUs per node: Slurm only hands out their names and indices (no cgroup
    # confinement here), which is what detect() reads.
    mkdir -p "$DIR/dev"
    touch "$DIR/dev/gpu0" "$DIR/dev/gpu1"
    echo "Name=gpu File=$DIR/dev/gpu[0-1]" >"$DIR/gres.conf"
    cat >"$CONF" <<EOF
# Written by tests/slurm/cluster.sh: ${#NODES[@]} virtual nodes on $host.
ClusterName=rhapsody
GresTypes=gpu
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
ReturnToService=2
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Quick turnover, so that tests see finished jobs leave squeue and dead nodes noticed.
MinJobAge=5
KillWait=5
SlurmdTimeout=30
InactiveLimit=0
MessageTimeout=30
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
NodeName=n[1-${#NODES[@]}] NodeHostname=$host NodeAddr=127.0.0.1 Port=$FIRST_SLURMD_PORT-$last_port CPUs=$CPUS RealMemory=$MEMORY_MB Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=n[1-${#NODES[@]}] Default=YES MaxTime=INFINITE State=UP
EOF
}

# Alive and not a zombie (a container's init may never reap a daemon that died).
pid_alive() {
    local pid state
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

nodes_idle() {
    local states
    states=$(SLURM_CONF=$CONF timeout 10 sinfo -h -N -o "%N %T" 2>/dev/null) || return 1
    [ "$(grep -c ' idle$' <<<"$states")" -eq "${#NODES[@]}" ]
}

start() {
    [ "$(id -u)" -eq 0 ] || die "needs root (slurmd runs jobs as their users)"
    mkdir -p "$DIR"
    if status; then
        say "already up"
        echo "export SLURM_CONF=$CONF"
        return 0
    fi
    install_missing
    start_munge
    write_conf
    export SLURM_CONF=$CONF
    pid_alive "$DIR/slurmctld.pid" || /usr/sbin/slurmctld -i || die "slurmctld did not start"
    start_slurmds
    # 60 s of wall clock (a hanging sinfo takes its 10 s timeout per look)
    local deadline=$((SECONDS + 60))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if nodes_idle; then
            say "up: ${#NODES[@]} nodes idle"
            echo "export SLURM_CONF=$CONF"
            return 0
        fi
        sleep 0.2
    done
    SLURM_CONF=$CONF sinfo -N >&2 || true
    die "nodes not idle after 60 s (logs in $DIR/log)"
}

# Also used to bring back a slurmd that crashed (the notes saw it under concurrent step launches).
start_slurmds() {
    for node in "${NODES[@]}"; do
        pid_alive "$DIR/slurmd-$node.pid" && continue
        /usr/sbin/slurmd -N "$node" || die "slurmd -N $node did not start"
    done
}

# Every process started under this cluster: the daemons and job steps carry SLURM_CONF=$CONF
# in their environment; job processes are their descendants.
cluster_pids() {
    local pid
    for env in /proc/[0-9]*/environ; do
        pid=${env#/proc/}
        pid=${pid%/environ}
        [ "$pid" = "$$" ] && continue
        { tr '\0' '\n' <"$env" | grep -qx "SLURM_CONF=$CONF"; } 2>/dev/null || continue
        case "$(cat "/proc/$pid/comm" 2>/dev/null)" in
            slurmctld | slurmd | slurmstepd) echo "$pid" ;;
        esac
    done
}

descendants() {
    local child
    for child in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
        echo "$child"
        descendants "$child"
    done
}

stop() {
    [ -f "$CONF" ] || { say "not set up in $DIR: nothing to stop"; return 0; }
    export SLURM_CONF=$CONF
    if pid_alive "$DIR/slurmctld.pid"; then
        timeout 10 scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
        timeout 10 scancel --quiet --state=PENDING 2>/dev/null || true
        for _ in $(seq 100); do
            [ -z "$(timeout 5 squeue -h -o %i 2>/dev/null)" ] && break
            sleep 0.2
        done
    fi
    local pids=() pid
    for pid in $(cluster_pids); do
        pids+=("$pid")
        mapfile -t -O "${#pids[@]}" pids < <(descendants "$pid")
    done
    [ "${#pids[@]}" -gt 0 ] && kill -TERM "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 50); do
        local alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" -eq 0 ] && break
        sleep 0.1
    done
    [ "${#pids[@]}" -gt 0 ] && kill -KILL "${pids[@]}" 2>/dev/null || true
    if pid_alive "$DIR/munged.pid"; then
        kill -TERM "$(cat "$DIR/munged.pid")" 2>/dev/null || true
    fi
    rm -f "$DIR/munged.pid"
    # A fresh start next time: no saved jobs to recover.
    rm -rf "$DIR/state" "$DIR/spool"
    say "stopped"
}

# Up: the controller answers and no node is down or drained (jobs may be running).
status() {
    local states
    [ -f "$CONF" ] && pid_alive "$DIR/slurmctld.pid" || return 1
    states=$(SLURM_CONF=$CONF timeout 10 sinfo -h -N -o "%T" 2>/dev/null) || return 1
    [ "$(grep -cE '^(idle|mixed|allocated|completing)$' <<<"$states")" -eq "${#NODES[@]}" ]
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    restart-slurmd) export SLURM_CONF=$CONF && start_slurmds ;;
    *) die "usage: $0 start|stop|status|restart-slurmd" ;;
esac
