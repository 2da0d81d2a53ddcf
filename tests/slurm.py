"""A real Slurm cluster of several nodes on one machine, on loopback, for the tests.

Debian's Slurm (22.05) is built with multiple-slurmd support, so one ``slurmd -N nodeK``
per node, each on its own port and spool folder, makes a cluster whose multi-node jobs
really run (every node is this host).  Everything lives under ``root``: the munge key
and socket, the configuration, the controller's state, the nodes' spools, logs and pid
files; every port is a free loopback port picked at start.  Two test sessions can
therefore each run their own cluster side by side (the cluster names differ too).

The GPUs are GRES entries backed by symlinks to /dev/null: Slurm counts and allocates
them (and sets ``CUDA_VISIBLE_DEVICES``) without any hardware.  There is no accounting
(no slurmdbd): ``sacct`` does not work, ``squeue``/``scontrol`` answer while a job is
known to the controller (``MinJobAge`` after it ends).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import textwrap
import time
from pathlib import Path

from .hub import free_port

GPU_MODEL = "testgpu"


class SlurmStartError(RuntimeError):
    pass


class DaemonExited(SlurmStartError):
    """A daemon ended while starting (e.g. its port was taken meanwhile)."""


class Slurm:
    """munged + slurmctld + ``nodes`` slurmd, started by :meth:`start`, all gone after :meth:`stop`.

    Node names are ``node1`` … ``nodeN``; one partition ``main`` (the default) holds them all.
    Run every Slurm command with ``env=slurm.env`` (it names this cluster's configuration).
    """

    def __init__(self, root: Path, nodes: int = 3, gpus_per_node: int = 4, cpus_per_node: int = 4,
                 memory_mb: int = 4096):
        self.root = Path(root)
        self.node_names = tuple(f"node{k}" for k in range(1, nodes + 1))
        self.gpus_per_node = gpus_per_node
        self.cpus_per_node = cpus_per_node
        self.memory_mb = memory_mb
        self.cluster_name = f"nothing{secrets.token_hex(4)}"
        self.conf = self.root / "etc" / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.log_dir = self.root / "log"
        self.ctld_port = 0
        self.start_seconds = 0.0
        self.node_ports: dict[str, int] = {}
        self._procs: dict[str, subprocess.Popen] = {}
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        for name in list(self.env):  # a job's or another cluster's settings must not leak into ours
            if name.startswith(("SLURM_", "SBATCH_", "SQUEUE_", "SINFO_", "SCANCEL_", "SRUN_", "SALLOC_")) \
                    and name != "SLURM_CONF":
                del self.env[name]

    # -- configuration ---------------------------------------------------------------------------

    def _write_config(self) -> None:
        for sub in ("etc", "munge", "munge-key", "ctld", "spool", "log", "run", "dev"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # munged wants its socket's folder open to everyone (any user's job talks to it) and its key's closed.
        (self.root / "munge").chmod(0o755)
        (self.root / "munge-key").chmod(0o700)
        self.ctld_port = free_port()
        ports: set[int] = {self.ctld_port}
        for name in self.node_names:
            port = free_port()
            while port in ports:
                port = free_port()
            ports.add(port)
            self.node_ports[name] = port
        gres_lines = ["AutoDetect=off"]
        node_lines = []
        for name in self.node_names:
            devices = self.root / "dev" / name
            devices.mkdir(exist_ok=True)
            for k in range(self.gpus_per_node):
                link = devices / f"nvidia{k}"
                if not link.is_symlink():
                    link.symlink_to("/dev/null")
            (self.root / "spool" / name).mkdir(exist_ok=True)
            gres = f" Gres=gpu:{GPU_MODEL}:{self.gpus_per_node}" if self.gpus_per_node else ""
            node_lines.append(f"NodeName={name} NodeHostname=localhost NodeAddr=127.0.0.1 Port={self.node_ports[name]}"
                              f" CPUs={self.cpus_per_node} RealMemory={self.memory_mb}{gres} State=UNKNOWN")
            if self.gpus_per_node:
                gres_lines.append(f"NodeName={name} Name=gpu Type={GPU_MODEL} "
                                  f"File={devices}/nvidia[0-{self.gpus_per_node - 1}]")
        r = self.root
        self.conf.write_text(textwrap.dedent(f"""\
            ClusterName={self.cluster_name}
            SlurmctldHost=localhost(127.0.0.1)
            SlurmctldPort={self.ctld_port}
            SlurmdPort={self.node_ports[self.node_names[0]]}
            SlurmUser=root
            SlurmdUser=root
            AuthType=auth/munge
            CredType=cred/munge
            AuthInfo=socket={self.munge_socket}
            StateSaveLocation={r}/ctld
            SlurmdSpoolDir={r}/spool/%n
            SlurmctldPidFile={r}/run/slurmctld.pid
            SlurmdPidFile={r}/run/slurmd-%n.pid
            SlurmctldLogFile={r}/log/slurmctld.log
            SlurmdLogFile={r}/log/slurmd-%n.log
            SlurmctldDebug=info
            SlurmdDebug=info
            PlugStackConfig={r}/etc/plugstack.conf
            ProctrackType=proctrack/linuxproc
            TaskPlugin=task/none
            SwitchType=switch/none
            MpiDefault=none
            SlurmdParameters=config_overrides
            ReturnToService=2
            SlurmctldTimeout=10
            SlurmdTimeout=10
            MessageTimeout=5
            InactiveLimit=0
            KillWait=2
            MinJobAge=300
            Waittime=0
            SchedulerType=sched/backfill
            SchedulerParameters=batch_sched_delay=0
            SelectType=select/cons_tres
            SelectTypeParameters=CR_Core_Memory
            DefMemPerCPU=128
            GresTypes=gpu
            JobAcctGatherType=jobacct_gather/none
            AccountingStorageType=accounting_storage/none
            JobCompType=jobcomp/none
            """) + "\n".join(node_lines) + "\nPartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n")
        (r / "etc" / "gres.conf").write_text("\n".join(gres_lines) + "\n")
        (r / "etc" / "plugstack.conf").write_text("")

    # -- life cycle --------------------------------------------------------------------------------

    def _spawn(self, key: str, argv: list[str]) -> None:
        log = open(self.log_dir / f"{key}.stdout", "ab")
        try:
            self._procs[key] = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                                stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()

    def start(self, timeout: float = 60, attempts: int = 3) -> None:
        """Starts the daemons and returns once every node is idle; raises with the logs' tails otherwise.

        A free port can be taken by someone else between picking and binding it; a daemon that exits
        at start is therefore retried on fresh ports, ``attempts`` times in all.
        """
        for attempt in range(1, attempts + 1):
            try:
                self._start(timeout)
                return
            except DaemonExited:
                if attempt == attempts:
                    raise

    def _start(self, timeout: float) -> None:
        started = time.monotonic()
        search = os.pathsep.join([self.env.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin"])
        self._bin = {b: shutil.which(b, path=search) or "" for b in ("munged", "mungekey", "slurmctld", "slurmd")}
        missing = [b for b, path in self._bin.items() if not path] + [b for b in ("sbatch", "sinfo", "scontrol")
                                                                      if not shutil.which(b, path=search)]
        if missing:
            raise SlurmStartError(f"Slurm is not installed (no {', '.join(missing)}): apt-get install -y "
                                  "--no-install-recommends slurm-wlm slurmctld slurmd slurm-client munge")
        self._write_config()
        munge = self.root / "munge"
        key = self.root / "munge-key" / "munge.key"
        if not key.exists():
            subprocess.run([self._bin["mungekey"], "--create", "--keyfile", str(key), "--bits", "8192"], check=True,
                           capture_output=True)
            key.chmod(0o400)
        self.munge_socket.unlink(missing_ok=True)  # a previous attempt's
        try:
            self._spawn("munged", [self._bin["munged"], "--foreground", f"--socket={self.munge_socket}",
                                   f"--key-file={key}", f"--log-file={munge / 'munged.log'}",
                                   f"--pid-file={munge / 'munged.pid'}", f"--seed-file={munge / 'munged.seed'}",
                                   "--num-threads=2"])
            self._wait(lambda: self.munge_socket.exists(), started + timeout, "munged made no socket")
            self._spawn("slurmctld", [self._bin["slurmctld"], "-D", "-i", "-f", str(self.conf)])
            self._wait(self._controller_answers, started + timeout, "slurmctld does not answer")
            for name in self.node_names:
                self._spawn(f"slurmd-{name}", [self._bin["slurmd"], "-D", "-N", name, "-f", str(self.conf)])
            self._wait(self._all_idle, started + timeout, "the nodes did not all become idle")
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started

    def _wait(self, ready, deadline: float, what: str) -> None:
        while not ready():
            for key, proc in self._procs.items():
                if proc.poll() is not None:
                    raise DaemonExited(f"{key} exited with {proc.returncode}\n{self.log_tails()}")
            if time.monotonic() > deadline:
                raise SlurmStartError(f"{what}\n{self.log_tails()}")
            time.sleep(0.1)

    def run(self, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """Runs one Slurm command against this cluster and returns its completed process (text)."""
        return subprocess.run(list(argv), env=self.env, capture_output=True, text=True, check=check,
                              timeout=timeout)

    def _controller_answers(self) -> bool:
        return self.run("scontrol", "ping", check=False, timeout=10).stdout.count("UP") > 0

    def node_states(self) -> dict[str, str]:
        out = self.run("sinfo", "--noheader", "--Node", "--format=%N|%T", check=False, timeout=10).stdout
        return dict(line.split("|", 1) for line in out.splitlines() if "|" in line)

    def _all_idle(self) -> bool:
        states = self.node_states()
        return all(states.get(name) == "idle" for name in self.node_names)

    def log_tails(self, lines: int = 15) -> str:
        parts = []
        for path in sorted(self.log_dir.glob("*")) + [self.root / "munge" / "munged.log"]:
            try:
                tail = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            parts.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    def cancel_all(self, timeout: float = 20) -> None:
        """Cancels every job of this cluster and waits (bounded) until none is left running."""
        if not self._controller_answers():
            return
        jobs = self.run("squeue", "--noheader", "--format=%i", check=False, timeout=10).stdout.split()
        if jobs:
            self.run("scancel", *jobs, check=False, timeout=10)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.run("squeue", "--noheader", "--format=%i", check=False, timeout=10).stdout.split():
                return
            time.sleep(0.2)

    def _leftover_pids(self, command: str | None = None) -> list[int]:
        """Processes still running with this cluster's SLURM_CONF (its daemons, slurmstepd and jobs inherit
        it), only those whose command name is ``command`` when given."""
        marker = f"SLURM_CONF={self.conf}".encode()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if marker not in f.read().split(b"\0"):
                        continue
                if command is not None:
                    with open(f"/proc/{entry}/comm") as f:
                        if f.read().strip() != command:
                            continue
            except OSError:
                continue
            found.append(int(entry))
        return found

    def stop(self) -> None:
        """Cancels all jobs, stops the daemons (SIGTERM, then SIGKILL) and leaves no process of theirs."""
        if "slurmctld" in self._procs and self._procs["slurmctld"].poll() is None:
            try:
                self.cancel_all()
            except (OSError, subprocess.SubprocessError):
                pass
        deadline = time.monotonic() + 5
        while self._leftover_pids("slurmstepd") and time.monotonic() < deadline:
            time.sleep(0.1)  # the jobs' slurmstepd finishing their clean-up
        order = [k for k in self._procs if k.startswith("slurmd-")] + ["slurmctld", "munged"]
        for key in order:
            proc = self._procs.get(key)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for pid in self._leftover_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._procs.clear()

    def kill_node(self, name: str) -> None:
        """Kills ``name``'s slurmd (SIGKILL, as a crash would); the controller marks it DOWN* after SlurmdTimeout."""
        proc = self._procs.pop(f"slurmd-{name}")
        proc.kill()
        proc.wait(timeout=10)

    def start_node(self, name: str, timeout: float = 30) -> None:
        """Starts ``name``'s slurmd again and waits until the node answers (ReturnToService=2 resumes it)."""
        self._spawn(f"slurmd-{name}", [self._bin["slurmd"], "-D", "-N", name, "-f", str(self.conf)])
        self._wait(lambda: not self.node_states().get(name, "").endswith("*")
                   and not self.node_states().get(name, "").startswith("down"),
                   time.monotonic() + timeout, f"{name} did not come back")

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
