"""slurm.conf for the test clusters: the single-node one on 127.0.0.1 and the namespace cluster's nodes.

Namespaces have no cgroup tree, so processes are tracked through /proc (``proctrack/linuxproc``) and tasks are
not bound (``task/none``); the single-node cluster uses the same, so both run wherever the tests run. Every
node's spool, PID and log files carry its name (``%n``), so several ``slurmd -N <node>`` share one folder.
Short timeouts let a test see a dead node within seconds; ``config_overrides`` lets two nodes each claim the
machine's CPUs.
"""
from __future__ import annotations

from pathlib import Path

CPUS_PER_NODE = 2


def slurm_conf(root: Path, ctld_host: str, nodes: dict[str, str], *, ports: tuple[int, int] = (6817, 6818),
               cpus: int = CPUS_PER_NODE, slurmd_timeout: int = 10, auth_socket: Path | None = None) -> str:
    """The configuration text: slurmctld on ``ctld_host`` (a name, or ``name(addr)``), ``nodes`` name -> address."""
    node_lines = "".join(f"NodeName={n} NodeAddr={a} NodeHostname={n} CPUs={cpus} RealMemory=2000 "
                         "State=UNKNOWN\n" for n, a in nodes.items())
    return f"""ClusterName=senettest
SlurmctldHost={ctld_host}
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={auth_socket or root / "munge" / "munge.socket"}
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
SlurmdTimeout={slurmd_timeout}
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
MaxArraySize=100
{node_lines}PartitionName=debug Nodes={",".join(nodes)} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""
