"""One process of a distributed run on Slurm: started by ``srun`` once per task, on every node of the job.

It runs as the run's user with only the standard library (``python -I -S``, so nothing of the
run's code or packages, nor ``site``, is imported here).  The scheduler computed every task's
environment and command line beforehand (``runenv.rank_plan``) and wrote the whole plan to
``<run>/ranks/plan.json`` (for people) and each task's part to ``<run>/ranks/task-N.plan``
(``SlurmExecutor.task_file_content``: NUL-separated, read without ``json``); this process reads
its own by ``SLURM_PROCID`` and checks that Slurm put it where the plan says (``SLURMD_NODENAME``,
``SLURM_NODEID``, ``SLURM_LOCALID``), so a rank never talks to the wrong rendezvous.  It then runs
the entry point and

- copies each line of its output to the job's log prefixed ``[rank N]`` (the run's one log)
  and, unprefixed, to ``<run>/ranks/rank-N.log`` (the per-rank log); a torchrun launcher is
  ``[node K]`` and ``node-K.log`` (torchrun's own ``--tee``/``--log-dir`` can split its workers);
- passes SIGTERM/SIGINT on to the entry point and waits for it, so a cancel is recorded;
- records how the entry point ended in ``<run>/ranks/rank-N.exit.json`` (``node-K.exit.json``) (written whole, then
  renamed into place): the scheduler reads these to say which rank failed first and how;
- exits with the entry point's status (128 + N for signal N), which makes ``srun
  --kill-on-bad-exit=1`` stop the other ranks when it is not 0.

It stands between srun and every rank, so it starts in the time of a bare interpreter: no ``site``,
no ``json`` or ``subprocess`` (``os.posix_spawn`` starts the entry point), measured at about half of
what the first version (``python -I``, json, subprocess) took.

usage: python -I -S slurmrank.py RANKS_DIR
"""

import os
import signal
import sys
import time

HEADER = 6  # node, node_rank, local_rank, "rank" or "node", its number, the count of environment entries


def read_task(path: str) -> tuple[list[bytes], dict[bytes, bytes], list[bytes]]:
    """(the header fields, the task's variables, its command line) from its ``task-N.plan``."""
    with open(path, "rb") as f:
        fields = f.read().split(b"\0")
    if len(fields) < HEADER + 2 or fields.pop() != b"":
        raise ValueError(f"{path} is not a task plan")
    header, count = fields[:HEADER], int(fields[HEADER - 1])
    variables = dict(item.split(b"=", 1) for item in fields[HEADER:HEADER + count])
    argv = fields[HEADER + count:]
    if not argv:
        raise ValueError(f"{path} has no command")
    return header, variables, argv


def executable(name: bytes, env: dict[bytes, bytes]) -> bytes:
    """``name`` as exec would find it with the child's PATH (as subprocess does)."""
    if b"/" in name:
        return name
    for folder in env.get(b"PATH", os.defpath.encode()).split(b":"):
        candidate = os.path.join(folder or b".", name)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return name


def _text(value: str) -> str:
    """A JSON string of a node name (Slurm node names need no escapes but these)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def main(ranks_dir: str) -> int:
    task = int(os.environ["SLURM_PROCID"])
    header, variables, argv = read_task(os.path.join(ranks_dir, f"task-{task}.plan"))
    node, node_rank, local_rank, what, rank = (field.decode("utf-8", "surrogateescape") for field in header[:5])
    where = (os.environ.get("SLURMD_NODENAME"), os.environ.get("SLURM_NODEID"), os.environ.get("SLURM_LOCALID"))
    if where != (node, node_rank, local_rank):
        print(f"nothing: task {task} was started as node {where[0]} (node id {where[1]}, local id {where[2]}) "
              f"but the plan puts it on {node} (node rank {node_rank}, local rank {local_rank})", flush=True)
        return 125
    env = dict(os.environb)
    env.update(variables)
    prefix = f"[{what} {rank}] ".encode()
    out = sys.stdout.buffer
    with open(os.path.join(ranks_dir, f"{what}-{rank}.log"), "ab", buffering=0) as log:
        read_end, write_end = os.pipe()  # both close on exec; the child gets dups of the write end
        try:
            pid = os.posix_spawn(executable(argv[0], env), argv, env, file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, write_end, 1), (os.POSIX_SPAWN_DUP2, write_end, 2)],
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
        finally:
            os.close(write_end)

        def forward(signum, frame):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, forward)
        with open(read_end, "rb") as pipe:
            for line in pipe:
                log.write(line)
                out.write(prefix + line if line.endswith(b"\n") else prefix + line + b"\n")
                out.flush()
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    record = (f'{{"task": {task}, {_text(what)}: {int(rank)}, "node": {_text(node)}, "node_rank": {int(node_rank)}, '
              f'"exit_code": {code}, "at": {time.time()!r}}}')
    path = os.path.join(ranks_dir, f"{what}-{rank}.exit.json")
    with open(path + ".tmp", "w") as f:
        f.write(record)
    os.replace(path + ".tmp", path)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
