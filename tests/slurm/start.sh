#!/usr/bin/env bash
# A one-node SLURM cluster on this machine (munge, slurmctld, slurmd), for the tests of --launcher slurm.
#
#   tests/slurm/start.sh          # installs slurm-wlm and munge if missing (apt, as root), starts what is
#                                 # not running, waits until the node takes jobs, prints one line
#
# Idempotent. Its configuration and state live under $ECG_SLURM_DIR (default /tmp/ecg-slurm); clients find
# it through SLURM_CONF=$ECG_SLURM_DIR/slurm.conf (the last line printed says so), so a cluster
# configured in /etc/slurm is never touched. Exits non-zero with one line saying why it cannot start.
set -uo pipefail
DIR=${ECG_SLURM_DIR:-/tmp/ecg-slurm}
CONF=$DIR/slurm.conf
fail() { echo "slurm: cannot start a one-node cluster: $*" >&2; exit 1; }

export SLURM_CONF=$CONF

mkdir -p "$(dirname "$DIR")"
exec 9>"$DIR.lock"   # one start at a time (test processes side by side may each call it); daemons close it
flock 9 || fail "cannot lock $DIR.lock"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
   || ! command -v sbatch >/dev/null; then
    [ "$(id -u)" = 0 ] || fail "slurm-wlm and munge are not installed and installing them needs root"
    command -v apt-get >/dev/null || fail "slurm-wlm and munge are not installed and there is no apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q slurm-wlm munge >"$DIR.apt.log" 2>&1 \
        || { apt-get update -q >>"$DIR.apt.log" 2>&1 && apt-get install -y -q slurm-wlm munge >>"$DIR.apt.log" 2>&1; } \
        || fail "apt-get install slurm-wlm munge failed (see $DIR.apt.log)"
fi
NODE=$(slurmd -C 2>/dev/null | head -1 | sed 's/ UpTime=.*//')
[ -n "$NODE" ] || fail "slurmd -C does not describe this machine"
HOST=$(hostname -s)
write_config() {
cat <<CONFIG
# one-node cluster written by tests/slurm/start.sh
ClusterName=ecg
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# a requeued job may start again cred_expire + 1 s later: 5 is SLURM's least
AuthInfo=cred_expire=5
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmctldPort=${ECG_SLURMCTLD_PORT:-6817}
SlurmdPort=${ECG_SLURMD_PORT:-6818}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# a test cluster: jobs start within a second of their submission, not of the next pass
SchedulerParameters=sched_interval=1,batch_sched_delay=0
MpiDefault=none
SwitchType=switch/none
JobRequeue=1
ReturnToService=2
MinJobAge=600
SlurmdTimeout=60
# seconds from SIGTERM to SIGKILL when a job is cancelled or requeued (30 by default)
KillWait=5
$NODE State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONFIG
}
mkdir -p "$DIR"
write_config >"$CONF.tmp"
if cmp -s "$CONF.tmp" "$CONF" && pgrep -F "$DIR/slurmctld.pid" >/dev/null 2>&1 && pgrep -F "$DIR/slurmd.pid" >/dev/null 2>&1 \
   && sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
    rm -f "$CONF.tmp"
    echo "slurm: running, node $HOST $(sinfo -h -o %t | head -1); SLURM_CONF=$CONF"
    exit 0
fi
[ "$(id -u)" = 0 ] || fail "the daemons run as root here (SlurmUser=root); run it as root"

mkdir -p "$DIR/state" "$DIR/spool" /run/munge /var/log/munge /var/lib/munge
# munge: a key, its socket folder, the daemon (as the munge user when there is one)
if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=128 status=none || fail "cannot write a munge key"
fi
MUNGE_USER=root
id munge >/dev/null 2>&1 && MUNGE_USER=munge
chown -R "$MUNGE_USER" /etc/munge /run/munge /var/log/munge /var/lib/munge
chmod 700 /etc/munge /var/lib/munge; chmod 400 /etc/munge/munge.key; chmod 755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    if [ "$MUNGE_USER" = munge ]; then
        runuser -u munge -- munged 9>&- 2>"$DIR/munged.err" || fail "munged did not start: $(tail -1 "$DIR/munged.err")"
    else
        munged --force 9>&- 2>"$DIR/munged.err" || fail "munged did not start: $(tail -1 "$DIR/munged.err")"
    fi
    for _ in $(seq 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
    munge -n | unmunge >/dev/null 2>&1 || fail "munge does not answer"
fi

write_config >"$CONF.tmp"
CHANGED=1
cmp -s "$CONF.tmp" "$CONF" && CHANGED=0
mv "$CONF.tmp" "$CONF"

if [ $CHANGED = 1 ]; then  # a new configuration: restart whatever runs with the old one
    for d in slurmd slurmctld; do
        if pkill -F "$DIR/$d.pid" 2>/dev/null; then
            for _ in $(seq 20); do pgrep -F "$DIR/$d.pid" >/dev/null 2>&1 || break; sleep 0.5; done
        fi
    done
fi
if ! pgrep -F "$DIR/slurmctld.pid" >/dev/null 2>&1; then
    slurmctld -f "$CONF" 9>&- 2>"$DIR/slurmctld.err" || fail "slurmctld did not start: $(tail -1 "$DIR/slurmctld.err") (log $DIR/slurmctld.log)"
fi
if ! pgrep -F "$DIR/slurmd.pid" >/dev/null 2>&1; then
    slurmd -f "$CONF" 9>&- 2>"$DIR/slurmd.err" || fail "slurmd did not start: $(tail -1 "$DIR/slurmd.err") (log $DIR/slurmd.log)"
fi
for _ in $(seq 60); do
    STATE=$(sinfo -h -o %t 2>/dev/null | head -1)
    case "$STATE" in idle|mix|alloc) break;; esac
    sleep 1
done
case "$STATE" in
    idle|mix|alloc) ;;
    down*|drain*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1; sleep 2
                  STATE=$(sinfo -h -o %t 2>/dev/null | head -1)
                  case "$STATE" in idle|mix|alloc) ;; *) fail "node $HOST is $STATE (log $DIR/slurmd.log)";; esac;;
    *) fail "node $HOST is '${STATE:-unknown}' after 60 s (logs $DIR/slurmctld.log, $DIR/slurmd.log)";;
esac
echo "slurm: started, node $HOST $STATE ($(echo "$NODE" | grep -o 'CPUs=[0-9]*')); SLURM_CONF=$CONF"
