"""Per-job control groups: limits the kernel enforces, and every process of a job found and killed.

A process group is not a job boundary: a child can ``setsid`` away, ignore
SIGTERM or fork faster than it is killed.  A cgroup holds every descendant
whatever it does, so cancel, max-time and preemption end all of a job's
processes, and a job's GPUs are given back only once its cgroup is empty.

The hierarchy is nested under the scheduler's own cgroup (the delegation model:
a service manages the subtree it was given), one cgroup per job:
``<own cgroup>/nothing/<job name>``.  cgroup v2 is used where it is the mounted
hierarchy; otherwise the v1 controllers memory, cpu, pids and freezer.  Where
neither can be written, ``Cgroups.available`` is False and ``Cgroups.why`` says
why: the executor then falls back to process groups and says so in the run's
events.

Every function here does blocking file work on cgroupfs: the scheduler calls
them through its helper process, never on the event loop.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

V1_CONTROLLERS = ("memory", "cpu", "pids", "freezer")
V1_REQUIRED = ("memory", "pids", "freezer")
CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class Limits:
    """What a job may use; 0 means no limit of that kind."""

    memory_bytes: int = 0
    cpus: float = 0
    pids: int = 0


def _own_paths(proc_cgroup: str) -> dict[str, str]:
    """Controller (or "" for v2) → this process's cgroup path, from /proc/self/cgroup."""
    paths: dict[str, str] = {}
    for line in Path(proc_cgroup).read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


@dataclass(frozen=True)
class JobCgroup:
    """One job's cgroup: one folder per controller (v1) or one folder (v2)."""

    name: str
    version: int
    dirs: dict[str, str] = field(default_factory=dict)

    @property
    def procs_files(self) -> list[str]:
        """Files a process joins the job through (write ``0`` for itself, as root)."""
        return [os.path.join(d, "cgroup.procs") for d in self.dirs.values()]

    def _dir(self, controller: str) -> str:
        return self.dirs["unified" if self.version == 2 else controller]

    def pids(self) -> set[int]:
        """Every process of the job (read from each controller's folder that exists: a start killed while the
        folders were being made leaves only some of them)."""
        found: set[int] = set()
        for d in self.dirs.values():
            try:
                found.update(int(p) for p in Path(d, "cgroup.procs").read_text().split())
            except FileNotFoundError:
                continue
        return found

    def leader(self) -> int | None:
        """The job's first process: the one in the cgroup whose parent is not (the run's shim), or None."""
        pids = self.pids()
        for pid in sorted(pids):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ValueError, IndexError):
                continue
            if ppid not in pids:
                return pid
        return None

    def empty(self) -> bool:
        return not self.pids()

    def signal(self, sig: int) -> int:
        """Send ``sig`` to every process of the job; returns how many were signalled."""
        sent = 0
        for pid in self.pids():
            try:
                os.kill(pid, sig)
                sent += 1
            except ProcessLookupError:
                pass
        return sent

    def kill(self, timeout: float = 10.0) -> bool:
        """SIGKILL every process, frozen first so nothing forks in between; True once the cgroup is empty."""
        if not any(os.path.isdir(d) for d in self.dirs.values()):
            return True
        if self.version == 2 and os.path.exists(os.path.join(self._dir(""), "cgroup.kill")):
            _write(os.path.join(self._dir(""), "cgroup.kill"), "1")
        elif self._can_freeze():
            self._freeze(True)
            try:
                self.signal(signal.SIGKILL)
            finally:
                self._freeze(False)
        else:  # no freezer folder (a partly made cgroup): kill until empty
            self.signal(signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while not self.empty():
            if time.monotonic() > deadline:
                return False
            self.signal(signal.SIGKILL)  # anything that slipped in before the freeze took hold
            time.sleep(0.01)
        return True

    def _can_freeze(self) -> bool:
        if self.version == 2:
            return os.path.exists(os.path.join(self._dir(""), "cgroup.freeze"))
        return os.path.exists(os.path.join(self.dirs.get("freezer", ""), "freezer.state"))

    def _freeze(self, frozen: bool) -> None:
        if self.version == 2:
            path = os.path.join(self._dir(""), "cgroup.freeze")
            if os.path.exists(path):
                _write(path, "1" if frozen else "0")
            return
        state = os.path.join(self._dir("freezer"), "freezer.state")
        _write(state, "FROZEN" if frozen else "THAWED")
        if frozen:
            deadline = time.monotonic() + 2.0
            while Path(state).read_text().strip() != "FROZEN" and time.monotonic() < deadline:
                time.sleep(0.001)

    def oom_kills(self) -> int:
        """How many processes of the job the kernel killed for exceeding its memory limit."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            text = Path(self._dir("memory"), name).read_text()
        except (FileNotFoundError, KeyError):
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        if self.version == 1:
            # Kernels before 4.13 have no oom_kill count; hitting the limit is the next best sign.
            try:
                return int(Path(self._dir("memory"), "memory.failcnt").read_text()) and 1
            except (FileNotFoundError, ValueError):
                return 0
        return 0

    def memory_limit(self) -> int:
        name = "memory.max" if self.version == 2 else "memory.limit_in_bytes"
        try:
            text = Path(self._dir("memory"), name).read_text().strip()
        except (FileNotFoundError, KeyError):
            return 0
        return 0 if text == "max" or int(text) >= 2**62 else int(text)

    def remove(self) -> None:
        """Remove the (empty) cgroup folders; a folder still in use is left for the next clean-up."""
        for d in self.dirs.values():
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno != errno.EBUSY:
                    raise


class Cgroups:
    """Where job cgroups go on this machine, and whether they can be made at all."""

    def __init__(self, root: str = "nothing", mount: str = "/sys/fs/cgroup", proc_cgroup: str = "/proc/self/cgroup"):
        self.root, self.mount = root, mount
        self.version = 0
        self.bases: dict[str, str] = {}
        self.why = ""
        try:
            self._detect(proc_cgroup)
        except OSError as e:
            self.version, self.bases, self.why = 0, {}, f"cgroups cannot be used here: {e}"

    @classmethod
    def disabled(cls, why: str) -> Cgroups:
        """A hierarchy that is not used, saying why."""
        cgroups = cls.__new__(cls)
        cgroups.root, cgroups.mount, cgroups.version, cgroups.bases, cgroups.why = "", "", 0, {}, why
        return cgroups

    @property
    def available(self) -> bool:
        return self.version != 0

    def _detect(self, proc_cgroup: str) -> None:
        own = _own_paths(proc_cgroup)
        if os.path.exists(os.path.join(self.mount, "cgroup.controllers")):
            base = os.path.join(self.mount, own.get("", "/").lstrip("/"), self.root)
            self._prepare_v2(base)
            self.version, self.bases = 2, {"unified": base}
            return
        missing = [c for c in V1_REQUIRED if not os.path.isdir(os.path.join(self.mount, c))]
        if missing:
            self.why = f"no cgroup v2 hierarchy and the v1 controllers {', '.join(missing)} are not mounted"
            return
        bases = {}
        for controller in V1_CONTROLLERS:
            top = os.path.join(self.mount, controller)
            if not os.path.isdir(top):
                continue
            base = os.path.join(top, own.get(controller, "/").lstrip("/"), self.root)
            os.makedirs(base, exist_ok=True)
            if not os.access(os.path.join(base, "cgroup.procs"), os.W_OK):
                self.why = f"{base} is not writable (the scheduler needs root for cgroups)"
                return
            bases[controller] = base
        self.version, self.bases = 1, bases

    def _prepare_v2(self, base: str) -> None:
        """Our subtree with memory, cpu and pids delegated to its children."""
        os.makedirs(base, exist_ok=True)
        wanted = {"memory", "cpu", "pids"}
        parent = os.path.dirname(base)
        available = set(Path(parent, "cgroup.controllers").read_text().split())
        if not wanted <= available:
            raise OSError(errno.ENOTSUP, f"the cgroup v2 controllers {', '.join(sorted(wanted - available))} "
                                         f"are not delegated to {parent}")
        for folder in (parent, base):
            enabled = set(Path(folder, "cgroup.subtree_control").read_text().split())
            if not wanted <= enabled:
                _write(os.path.join(folder, "cgroup.subtree_control"), " ".join(f"+{c}" for c in sorted(wanted)))

    def job(self, name: str) -> JobCgroup:
        """The cgroup of job ``name`` (whether or not its folders exist)."""
        if self.version == 2:
            return JobCgroup(name, 2, {"unified": os.path.join(self.bases["unified"], name)})
        return JobCgroup(name, 1, {c: os.path.join(b, name) for c, b in self.bases.items()})

    def create(self, name: str, limits: Limits) -> JobCgroup:
        """A fresh cgroup for ``name`` with ``limits`` (an existing one, left by a crash, is emptied first)."""
        cg = self.job(name)
        if any(os.path.isdir(d) for d in cg.dirs.values()):
            cg.kill()
        for d in cg.dirs.values():
            os.makedirs(d, exist_ok=True)
        if cg.version == 2:
            d = cg.dirs["unified"]
            _write(os.path.join(d, "memory.max"), str(limits.memory_bytes) if limits.memory_bytes else "max")
            if os.path.exists(os.path.join(d, "memory.swap.max")):
                _write(os.path.join(d, "memory.swap.max"), "0" if limits.memory_bytes else "max")
            quota = int(limits.cpus * CPU_PERIOD_US) if limits.cpus else "max"
            _write(os.path.join(d, "cpu.max"), f"{quota} {CPU_PERIOD_US}")
            _write(os.path.join(d, "pids.max"), str(limits.pids) if limits.pids else "max")
            return cg
        memory = cg.dirs["memory"]
        _write(os.path.join(memory, "memory.limit_in_bytes"), str(limits.memory_bytes) if limits.memory_bytes else "-1")
        memsw = os.path.join(memory, "memory.memsw.limit_in_bytes")
        if os.path.exists(memsw):  # no swapping around the limit
            _write(memsw, str(limits.memory_bytes) if limits.memory_bytes else "-1")
        if "cpu" in cg.dirs:
            _write(os.path.join(cg.dirs["cpu"], "cpu.cfs_period_us"), str(CPU_PERIOD_US))
            _write(os.path.join(cg.dirs["cpu"], "cpu.cfs_quota_us"),
                   str(int(limits.cpus * CPU_PERIOD_US)) if limits.cpus else "-1")
        _write(os.path.join(cg.dirs["pids"], "pids.max"), str(limits.pids) if limits.pids else "max")
        return cg


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)
