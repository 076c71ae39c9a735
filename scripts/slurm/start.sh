#!/usr/bin/env bash
# Start a single-node Slurm cluster with accounting on this machine, without systemd:
# munged, MariaDB, slurmdbd, slurmctld and slurmd, as root. Installs nothing (install.sh does).
# Idempotent: a cluster that already answers is left as it is. Prints the seconds it took.
#
# What Slurm 22.05 needs here (no systemd, no cgroups), and why:
#   ProctrackType=proctrack/linuxproc, TaskPlugin=task/none, JobAcctGatherType=jobacct_gather/none:
#     the cgroup plugins need a cgroup hierarchy that containers and CI machines do not give.
#   AccountingStorageType=accounting_storage/slurmdbd (MariaDB): without accounting, sacct has no
#     answer and submitit never learns that a job was cancelled.
#   AuthInfo=cred_expire=10 and SchedulerParameters=sched_interval=5,bf_interval=5: a requeued job
#     otherwise waits about 3 minutes before it may start again.
#   JobRequeue=1; PreemptType=preempt/partition_prio, PreemptMode=REQUEUE and
#     SlurmctldParameters=preempt_send_user_signal: a job of partition `high` preempts (requeues)
#     a job of partition `debug`, which first gets its --signal (USR2) and GraceTime to checkpoint.
#   MaxArraySize=4 (array indices 0-3): small, so that a sweep of 5 jobs exercises the split into
#     several arrays. NCDEPTH_SLURM_MAX_ARRAY_SIZE overrides it.
set -euo pipefail
conf_dir=/etc/slurm
host=$(hostname -s)
cpus=$(nproc)
memory_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
max_array_size=${NCDEPTH_SLURM_MAX_ARRAY_SIZE:-4}
start=$(date +%s)

answers() { timeout 10 sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)' && timeout 10 sacctmgr -n show cluster >/dev/null 2>&1; }
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: retry COMMAND once a second
    local limit=$1 what=$2
    shift 2
    for ((i = 0; i < limit; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 1
    done
    echo "start.sh: $what did not come up within $limit s" >&2
    tail -n 20 /var/log/slurm/*.log /var/log/mysql/*.log 2>/dev/null >&2 || true
    exit 1
}

if answers; then
    echo "start.sh: the cluster already answers"
    exit 0
fi

mkdir -p "$conf_dir" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /run/mysqld
cat > "$conf_dir/slurm.conf" <<CONF
ClusterName=ncdepth
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
JobRequeue=1
MaxArraySize=$max_array_size
MinJobAge=300
KillWait=10
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=60
PartitionName=high Nodes=$host MaxTime=INFINITE State=UP PriorityTier=10
CONF
cat > "$conf_dir/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=/run/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
CONF
chmod 600 "$conf_dir/slurmdbd.conf"

# munged runs as the munge user (it refuses root); the package made the key.
chown munge:munge /run/munge
[ -s /etc/munge/munge.key ] || { mungekey --create 2>/dev/null || create-munge-key -f; }
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
pgrep -u munge -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
wait_for 30 munged munge -n

chown mysql:mysql /run/mysqld
pgrep -x mariadbd >/dev/null || { setsid nohup mariadbd --user=mysql >/var/log/slurm/mariadb.log 2>&1 & }  # its own session: a killed process group of the caller leaves it running
wait_for 60 MariaDB mariadb -e 'select 1'
mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

pgrep -x slurmdbd >/dev/null || slurmdbd
wait_for 60 slurmdbd sacctmgr -n show cluster
sacctmgr -i -n show cluster format=cluster | grep -qw ncdepth || sacctmgr -i add cluster ncdepth >/dev/null

pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
wait_for 90 "slurmctld and slurmd" answers
scontrol update nodename="$host" state=resume 2>/dev/null || true
echo "start.sh: cluster up in $(($(date +%s) - start)) s: $(sinfo -h -o '%P %T %c CPUs' | tr '\n' ' ')"
