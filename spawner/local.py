"""Notebooks on the hub's own machine, each user's server as their own Unix account in their persistent folder.

With ``UnixAccounts.enabled`` (the default when the hub runs as root) the
single-user server, its kernels and the user's ``cont-init.d`` scripts run as the
account :class:`~nothing.scheduler.accounts.UnixAccounts` maps the hub user to
(created on the first start), with only that account's groups and umask 077. The
working folder is ``<easymaker_root>/<user>``, the user's persistent folder standing
in for /root/easymaker: owned by the account, mode 0700, kept when the server stops
and exported as ``NOTHING_EASYMAKER_DIR``.  Every notebook also gets a cgroup of its
own with memory, CPU and process limits, joined before the process drops its
privileges; whatever is still in it when the server stops is killed.

With accounts off everything runs as the hub's own user, as JupyterHub's
``SimpleLocalProcessSpawner`` does: no isolation between users.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from jupyterhub.spawner import LocalProcessSpawner
from traitlets import Bool, Float, Instance, Integer, Unicode, default

from ..scheduler.accounts import NOLOGIN_SHELLS, Account, UnixAccounts
from ..scheduler.cgroups import Cgroups, JobCgroup, Limits
from .continit import DEFAULT_KILL_GRACE
from .gpu_hold import SchedulerGpusMixin

KERNEL_SPEC_MANAGER = "nothing.spawner.kernels.CustomEnvKernelSpecManager"
NOTEBOOK_UMASK = 0o077
TERMINAL_SHELL = "/bin/bash"  # what SHELL says when the account's own shell is a nologin one

# A cgroup's processes that would not die after this many seconds are left, and the hub says so.
CGROUP_KILL_SECONDS = 10.0
_hierarchies: dict[str, Cgroups] = {}  # cgroup_parent -> where the notebooks' cgroups go, found once
_hierarchies_lock = threading.Lock()


def _hierarchy(parent: str) -> Cgroups:
    """The cgroup hierarchy for ``parent`` (blocking: it makes the parent folder the first time)."""
    with _hierarchies_lock:
        if parent not in _hierarchies:
            _hierarchies[parent] = Cgroups(parent)
        return _hierarchies[parent]


def _preexec(cgroup_procs: list[str], account: Account | None, groups: list[int], cwd: str, errors: int):
    """What the child does between fork and exec: join the cgroup (as root), drop to the account, umask, chdir.

    Everything it needs is computed before the fork (no passwd lookups in the child).
    What went wrong is written to the pipe ``errors``: Popen itself only says that
    something did (see :func:`_child_errors`).
    """

    def preexec() -> None:
        try:
            for path in cgroup_procs:
                fd = os.open(path, os.O_WRONLY)
                try:
                    os.write(fd, b"0")  # "0": the writing process itself
                finally:
                    os.close(fd)
            if account is not None:
                os.setgroups(groups)
                os.setgid(account.gid)
                os.setuid(account.uid)
            os.umask(NOTEBOOK_UMASK)
            os.chdir(cwd)
        except OSError as e:
            if errors >= 0:
                os.write(errors, str(e).encode()[:4000])
            raise

    return preexec


@contextlib.contextmanager
def _child_errors():
    """A pipe for :func:`_preexec` to report through; turns Popen's bare preexec failure into that report."""
    read, write = os.pipe()
    try:
        try:
            yield write
        except subprocess.SubprocessError as e:
            os.close(write)
            write = -1
            why = os.read(read, 4096).decode(errors="replace") or str(e)
            raise RuntimeError(f"A notebook process could not be set up: {why}") from None
    finally:
        os.close(read)
        if write != -1:
            os.close(write)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    """Give ``root`` and everything in it to ``uid``; symbolic links themselves, never what they point to."""
    os.chown(root, uid, gid, follow_symlinks=False)
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)


def _blocked_on_the_way(program: str, account: Account) -> str | None:
    """The first folder or file that keeps ``account`` from running ``program`` (and its ``#!`` interpreter),
    or None. Judged from the modes, owners and groups only: enough to catch a Python under /root."""
    groups = set(os.getgrouplist(account.name, account.gid))

    def may(path: str, bit: int) -> bool:
        st = os.stat(path)
        if st.st_uid == account.uid:
            return bool(st.st_mode & (bit << 6))
        return bool(st.st_mode & ((bit << 3) if st.st_gid in groups else bit))

    todo = [program]
    try:
        while todo:
            path = todo.pop()
            for candidate in dict.fromkeys([path, os.path.realpath(path)]):
                for folder in reversed(Path(candidate).parents):
                    if not may(str(folder), 0o1):
                        return str(folder)
                if not may(candidate, 0o1):
                    return candidate
            with open(path, "rb") as f:
                head = f.readline(256)
            if head.startswith(b"#!") and head[2:].split():
                todo.append(os.fsdecode(head[2:].split()[0]))
    except OSError:
        return None  # a missing program: starting it says so
    return None


def _server_slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_-]", "_", name)
    return slug if slug == name else f"{slug[:40]}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"


async def gpu_options_form(spawner: NothingLocalSpawner) -> str:
    """The spawn form's GPU choice: 0 up to :meth:`NothingLocalSpawner.notebook_gpu_choices`, nothing when that is 0.

    The default ``options_form``; a site may set its own string or callable instead.
    """
    most = await spawner.notebook_gpu_choices()
    if most < 1:
        return ""
    options = "".join(f'<option value="{n}">{n}</option>' for n in range(most + 1))
    return (f'<label for="nothing-gpus">GPUs for this notebook</label> '
            f'<select id="nothing-gpus" name="gpus" class="form-control">{options}</select>')


class NothingLocalSpawner(SchedulerGpusMixin, LocalProcessSpawner):
    easymaker_root = Unicode(
        help="""Folder holding every user's persistent folder (their /root/easymaker).

        With Unix accounts on, users must be able to pass through it (mode 0711, made
        so when this spawner creates it); each user's folder in it is theirs, mode 0700.
        Example: ``c.NothingLocalSpawner.easymaker_root = "/srv/nothing/users"``
        """
    ).tag(config=True)

    @default("easymaker_root")
    def _default_easymaker_root(self):
        return os.path.abspath("nothing-users")

    home_dir_template = Unicode(
        help="""The user's persistent folder and the server's working folder; ``{username}`` is the hub name.

        Defaults to ``<easymaker_root>/{username}``.
        Example: ``c.NothingLocalSpawner.home_dir_template = "/data/{username}/easymaker"``
        """
    ).tag(config=True)

    @default("home_dir_template")
    def _default_home_dir_template(self):
        return os.path.join(self.easymaker_root, "{username}")

    home_dir = Unicode(help="This user's persistent folder (``home_dir_template`` filled in).")

    @default("home_dir")
    def _default_home_dir(self):
        return self.home_dir_template.format(username=self.user.name)

    accounts = Instance(UnixAccounts, help="The hub-user-to-Unix-account mapping, configured as ``c.UnixAccounts``.")

    @default("accounts")
    def _default_accounts(self):
        return UnixAccounts(parent=self)

    cont_init_python = Unicode(
        sys.executable,
        help="""The Python that runs the ``cont-init.d`` runner, as the user: one the users' accounts can execute.

        Defaults to the hub's own.
        Example: ``c.NothingLocalSpawner.cont_init_python = "/opt/nothing/.venv/bin/python"``
        """,
    ).tag(config=True)

    cont_init_timeout = Float(
        300,
        help="""Seconds each script in ``cont-init.d`` may run before it is stopped.

        Example: ``c.NothingLocalSpawner.cont_init_timeout = 60``
        """,
    ).tag(config=True)

    max_notebook_gpus = Integer(
        8,
        help="""Most GPUs a user may ask for a notebook in the spawn form (0 hides the choice).

        The GPUs come from the scheduler, count against the user's quota and are
        never preempted. Example: ``c.NothingLocalSpawner.max_notebook_gpus = 2``
        """,
    ).tag(config=True)

    use_cgroups = Bool(
        help="""Give every notebook a cgroup of its own, with ``mem_limit``, ``cpu_limit`` and ``pids_limit``.

        Everything the notebook starts (kernels, terminals, cont-init.d daemons) is in
        it and is killed when the server stops. Uses cgroup v2 where it is the mounted
        hierarchy, else the v1 memory, cpu, pids and freezer hierarchies
        (``nothing.scheduler.cgroups``, as runs do). Defaults to True when the hub runs
        as root; where no hierarchy can be written, notebooks start without one and the
        hub log says why.
        Example: ``c.NothingLocalSpawner.use_cgroups = False``
        """
    ).tag(config=True)

    @default("use_cgroups")
    def _default_use_cgroups(self):
        return os.geteuid() == 0

    cgroup_parent = Unicode(
        "nothing",
        help="""Folder of the notebooks' cgroups, inside the cgroup the hub runs in.

        Inside it so that limits put on the hub (by a container runtime or a systemd
        slice) still hold for its notebooks. A notebook's cgroup is
        ``<parent>/notebook-<account>`` (``.<server>`` appended for named servers).
        Example: ``c.NothingLocalSpawner.cgroup_parent = "nothing-notebooks"``
        """,
    ).tag(config=True)

    pids_limit = Integer(
        8192,
        help="""Most processes and threads one notebook may have at once (0: no limit); stops fork bombs.

        Example: ``c.NothingLocalSpawner.pids_limit = 2048``
        """,
    ).tag(config=True)

    # Resolved at every start: the account (None with accounts off), its groups, its HOME and SHELL.
    _account: Account | None = None
    _groups: list[int] = []
    _home: str = ""
    _shell: str = TERMINAL_SHELL
    _job: JobCgroup | None = None  # the cgroup of the start in progress or of the running server
    _errors = -1  # while a child is being started: the pipe its set-up reports failures through
    _starting = False

    @default("options_form")
    def _default_options_form(self):
        return gpu_options_form

    async def notebook_gpu_choices(self) -> int:
        """The most GPUs the form offers: ``max_notebook_gpus``, and no more than the largest node has.

        When the scheduler cannot say, the form offers up to ``max_notebook_gpus`` and the
        scheduler's refusal (with its reason) shows on the form if the count is too high.
        """
        largest = await self.largest_node_gpus() if self.max_notebook_gpus else None
        return self.max_notebook_gpus if largest is None else min(self.max_notebook_gpus, largest)

    def options_from_form(self, formdata):
        raw = (formdata.get("gpus") or ["0"])[0] or "0"
        try:
            gpus = int(raw)
        except ValueError:
            raise ValueError(f"GPUs must be a whole number, not {raw!r}") from None
        return {"gpus": gpus}

    def requested_gpus(self) -> int:
        gpus = self.user_options.get("gpus", 0)
        if isinstance(gpus, bool) or not isinstance(gpus, int) or not 0 <= gpus <= self.max_notebook_gpus:
            raise ValueError(f"a notebook may have 0 to {self.max_notebook_gpus} GPUs, not {gpus!r}")
        return gpus

    async def start(self):
        # The scheduler assigns the GPUs (and refuses, with the reason, when it cannot).
        return await self.start_holding_gpus(self.requested_gpus(), self._start_after_scripts)

    async def _start_after_scripts(self):
        self._starting = True
        try:
            await asyncio.to_thread(self._prepare)
            try:
                # The user's start-up scripts run before every start, as in the images' entrypoint.
                await self._run_cont_init()
                with self._reporting_child_errors():
                    return await super().start()
            except BaseException:
                await self._remove_cgroup()
                raise
        finally:
            self._starting = False

    def _prepare(self) -> None:
        """Blocking part of a start: the account, the persistent folder, a fresh cgroup."""
        self._account = None
        if self.accounts.enabled:
            self._account = account = self.accounts.account(self.user.name, home=self.home_dir)
            self._groups = os.getgrouplist(account.name, account.gid)
            entry = pwd.getpwnam(account.name)
            self._home = account.home if os.path.isdir(account.home) else self.home_dir
            self._shell = entry.pw_shell if entry.pw_shell and entry.pw_shell not in NOLOGIN_SHELLS \
                else TERMINAL_SHELL
            for program in (self.cont_init_python, self.cmd[0]):
                program = shutil.which(program, path=self.get_env().get("PATH")) or program
                blocked = _blocked_on_the_way(program, account)
                if blocked:
                    raise RuntimeError(f"{account.name} cannot run {program}: {blocked} is closed to other users. "
                                       "Install NothingAI where every user can read it (see docs/multi-user.md)")
        self._prepare_folder()
        self._job = None
        if self.use_cgroups:
            cgroups = _hierarchy(self.cgroup_parent)
            if not cgroups.available:
                self.log.warning("%s starts without a cgroup (no limits): %s", self._log_name, cgroups.why)
                return
            limits = Limits(memory_bytes=self.mem_limit or 0, cpus=self.cpu_limit or 0, pids=self.pids_limit)
            try:
                self._job = cgroups.create(self._cgroup_name(), limits)  # emptied first if a crash left it
            except OSError as e:
                self.log.warning("%s starts without a cgroup (no limits): %s", self._log_name, e)
                self._kill_cgroup()

    def _prepare_folder(self) -> None:
        root = Path(self.home_dir)
        easymaker_root = Path(self.easymaker_root)
        if self._account is None:
            root.mkdir(parents=True, exist_ok=True)
            return
        if not easymaker_root.exists():
            easymaker_root.mkdir(parents=True, exist_ok=True)
            easymaker_root.chmod(0o711)
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if root.lstat().st_uid != self._account.uid:
            # A folder from before accounts (root's) or made by hand: the user's files become theirs.
            self.log.info("Giving %s and its contents to %s", root, self._account.name)
            _chown_tree(root, self._account.uid, self._account.gid)
        os.chmod(root, 0o700)

    def _cgroup_name(self) -> str:
        """This server's cgroup, from names alone (so it is found again after a hub restart)."""
        name = f"notebook-{self.accounts.unix_name(self.user.name)}"
        return f"{name}.{_server_slug(self.name)}" if self.name else name

    def _kill_cgroup(self) -> None:
        """Kill what is left in this server's cgroup and remove it (blocking)."""
        self._job = None
        if not self.use_cgroups or not (cgroups := _hierarchy(self.cgroup_parent)).available:
            return
        job = cgroups.job(self._cgroup_name())
        if not job.kill(CGROUP_KILL_SECONDS):
            self.log.warning("Processes in %s's cgroup would not die: %s", self._log_name, sorted(job.pids()))
        try:
            job.remove()
        except OSError as e:
            self.log.warning("Could not remove %s's cgroup: %s", self._log_name, e)

    async def _remove_cgroup(self) -> None:
        await asyncio.to_thread(self._kill_cgroup)

    @contextlib.contextmanager
    def _reporting_child_errors(self):
        """While a child is started: the pipe its set-up reports through (see :func:`_child_errors`)."""
        with _child_errors() as self._errors:
            try:
                yield
            finally:
                self._errors = -1

    def _child_preexec(self):
        procs = self._job.procs_files if self._job else []
        return _preexec(procs, self._account, self._groups, self.home_dir, self._errors)

    async def _run_cont_init(self) -> None:
        """Run ``cont-init.d`` as the user, in the notebook's cgroup: they are the user's code.

        The runner is a process of its own (the program the images' entrypoints run), so
        every file it reads or writes in the user's folder is read and written as the user.
        """
        cmd = [self.cont_init_python, "-I", "-m", "nothing.spawner.continit", "--dir", self.home_dir,
               "--timeout", str(self.cont_init_timeout), "--kill-grace", str(DEFAULT_KILL_GRACE)]
        with self._reporting_child_errors():
            proc = await asyncio.create_subprocess_exec(
                *cmd, env=self.get_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, preexec_fn=self._child_preexec(), start_new_session=True)
        try:
            _, err = await proc.communicate()
        except BaseException:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            raise
        for line in err.decode(errors="replace").splitlines():
            self.log.info("%s: %s", self._log_name, line)

    def make_preexec_fn(self, name):
        return self._child_preexec()

    async def poll(self):
        status = await super().poll()
        if status is not None and not self._starting:
            # The server died on its own: the hub will not call stop(), so clean up here.
            await self._remove_cgroup()
            await self.release_gpus()
        return status

    async def stop(self, now=False):
        try:
            await super().stop(now=now)
        finally:
            await self._remove_cgroup()  # kernels, terminals and daemons the server left behind
            await self.release_gpus()  # also after the process died on its own

    def get_args(self):
        args = super().get_args()
        # As root, jupyter-server refuses to start without --allow-root.
        if os.geteuid() == 0 and self._account is None and "--allow-root" not in args:
            args.append("--allow-root")
        # Environments in custom-conda-envs/ appear as kernels.
        args.append(f"--ServerApp.kernel_spec_manager_class={KERNEL_SPEC_MANAGER}")
        return args

    def user_env(self, env):
        if self._account is None:
            env.update(USER=self.user.name, HOME=self.home_dir, SHELL=TERMINAL_SHELL)
        else:
            env.update(USER=self._account.name, LOGNAME=self._account.name, HOME=self._home, SHELL=self._shell)
        return env

    def get_env(self):
        env = super().get_env()
        # The platform's own executables (``nothing``) first on the PATH, so that a terminal finds them:
        # the folder of the notebook's Python when it has them, else the hub's (the venv's bin).
        for python in (self.cmd[0] if self.cmd else "", sys.executable):
            folder = os.path.dirname(python)
            if folder and os.access(os.path.join(folder, "nothing"), os.X_OK):
                rest = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and p != folder]
                env["PATH"] = os.pathsep.join([folder, *rest])
                break
        env["NOTHING_EASYMAKER_DIR"] = self.home_dir
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, self.notebook_gpus))
        return env

    async def move_certs(self, paths):
        """Internal SSL: the server's certificates, readable by the account, in its persistent folder."""
        if self._account is None:
            return paths
        out_dir = Path(self.home_dir) / ".jupyterhub" / "jupyterhub-certs"
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir(mode=0o700, parents=True)
        moved = {}
        for key, move in (("keyfile", shutil.move), ("certfile", shutil.move), ("cafile", shutil.copy)):
            moved[key] = str(out_dir / os.path.basename(paths[key]))
            move(paths[key], moved[key])
        for path in [out_dir.parent, out_dir, *moved.values()]:
            os.chown(path, self._account.uid, self._account.gid)
        return moved

    def get_state(self):
        state = super().get_state()
        state.update(self.gpu_state())
        return state

    def load_state(self, state):
        super().load_state(state)
        self.load_gpu_state(state)

    # clear_state() leaves notebook_gpus alone: LocalProcessSpawner.poll() clears the
    # state as soon as the process is gone, and stop() must still give the GPUs back.
