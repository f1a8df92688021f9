"""slurm.conf of the local cluster: slurmctld on the head host, one ``slurmd -N <node>`` per compute host.

Namespaces have no cgroup tree, so processes are tracked through /proc (``proctrack/linuxproc``) and tasks are
not bound (``task/none``). Every node's spool, PID and log files carry its name (``%n``). Short timeouts let a
test see a dead node within seconds; ``config_overrides`` lets two nodes each claim the machine's CPUs.
"""
from __future__ import annotations

from pathlib import Path

CPUS_PER_NODE = 2


def slurm_conf(root: Path, head_addr: str, nodes: dict[str, str]) -> str:
    node_lines = "".join(f"NodeName={n} NodeAddr={a} NodeHostname={n} CPUs={CPUS_PER_NODE} RealMemory=2000 "
                         "State=UNKNOWN\n" for n, a in nodes.items())
    return f"""ClusterName=senetlocal
SlurmctldHost=head({head_addr})
SlurmctldPort=6817
SlurmdPort=6818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd-%n.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd-%n.log
SlurmctldTimeout=30
SlurmdTimeout=10
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
MaxArraySize=100
{node_lines}PartitionName=debug Nodes={",".join(nodes)} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""
