"""One process of a distributed run on Slurm: started by ``srun`` once per task, on every node of the job.

It runs as the run's user with only the standard library (``python -I``, so nothing of the
run's code or packages is imported here).  The scheduler computed every task's environment
and command line beforehand (``runenv.rank_plan``) and wrote the whole plan to
``<run>/ranks/plan.json``; this process takes its own entry by ``SLURM_PROCID`` and checks that
Slurm put it where the plan says (``SLURMD_NODENAME``, ``SLURM_NODEID``, ``SLURM_LOCALID``),
so a rank never talks to the wrong rendezvous.  It then runs the entry point and

- copies each line of its output to the job's log prefixed ``[rank N]`` (the run's one log)
  and, unprefixed, to ``<run>/ranks/rank-N.log`` (the per-rank log); a torchrun launcher is
  ``[node K]`` and ``node-K.log`` (torchrun's own ``--tee``/``--log-dir`` can split its workers);
- passes SIGTERM/SIGINT on to the entry point and waits for it, so a cancel is recorded;
- records how the entry point ended in ``<run>/ranks/rank-N.exit.json`` (``node-K.exit.json``) (written whole, then
  renamed into place): the scheduler reads these to say which rank failed first and how;
- exits with the entry point's status (128 + N for signal N), which makes ``srun
  --kill-on-bad-exit=1`` stop the other ranks when it is not 0.

usage: python -I slurmrank.py RANKS_DIR
"""

import json
import os
import signal
import subprocess
import sys
import time


def main(ranks_dir: str) -> int:
    with open(os.path.join(ranks_dir, "plan.json")) as f:
        plan = json.load(f)
    task = int(os.environ["SLURM_PROCID"])
    me = plan[task]
    where = (os.environ.get("SLURMD_NODENAME"), os.environ.get("SLURM_NODEID"), os.environ.get("SLURM_LOCALID"))
    if where != (me["node"], str(me["node_rank"]), str(me["local_rank"])):
        print(f"nothing: task {task} was started as node {where[0]} (node id {where[1]}, local id {where[2]}) "
              f"but the plan puts it on {me['node']} (node rank {me['node_rank']}, local rank {me['local_rank']})",
              flush=True)
        return 125
    # A torchrun launcher stands for its node's workers: it is named by its node rank.
    what, rank = ("rank", int(me["env"]["RANK"])) if "RANK" in me["env"] else ("node", me["node_rank"])
    env = dict(os.environ, **me["env"])
    prefix = f"[{what} {rank}] ".encode()
    out = sys.stdout.buffer
    with open(os.path.join(ranks_dir, f"{what}-{rank}.log"), "ab", buffering=0) as log:
        child = subprocess.Popen(me["argv"], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT)

        def forward(signum, frame):
            try:
                child.send_signal(signum)
            except ProcessLookupError:
                pass

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, forward)
        for line in iter(child.stdout.readline, b""):
            log.write(line)
            out.write(prefix + line if line.endswith(b"\n") else prefix + line + b"\n")
            out.flush()
        code = child.wait()
    record = {"task": task, what: rank, "node": me["node"], "node_rank": me["node_rank"], "exit_code": code,
              "at": time.time()}
    path = os.path.join(ranks_dir, f"{what}-{rank}.exit.json")
    with open(path + ".tmp", "w") as f:
        json.dump(record, f)
    os.replace(path + ".tmp", path)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
