"""Records the Slurm outputs the parser tests read, from a real cluster (tests/slurm.py).

Run from the repository root (as root, with Debian's Slurm installed; takes about two minutes,
most of it waiting for a job to reach its one-minute time limit):

    .venv/bin/python -m tests.data.slurm.record

It rewrites the files next to this script.  The cluster's temporary folder is replaced by
/tmp/nothing-slurm-recorded in them.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from nothing.scheduler.executors import slurm_commands as sc

from ...slurm import Slurm

HERE = Path(__file__).resolve().parent
PLACEHOLDER = "/tmp/nothing-slurm-recorded"


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="nothing-slurm-"))
    root.chmod(0o711)
    slurm = Slurm(root, nodes=4)
    slurm.start()
    outputs: dict[str, str] = {}
    try:
        record(slurm, outputs)
    finally:
        slurm.stop()
        shutil.rmtree(root, ignore_errors=True)
    for name, text in outputs.items():
        text = text.replace(str(root), PLACEHOLDER).replace(str(root).replace("/", "\\/"),
                                                            PLACEHOLDER.replace("/", "\\/"))
        (HERE / name).write_text(text)
        print("wrote", name)


def record(slurm: Slurm, outputs: dict[str, str]) -> None:
    jobs = slurm.root / "jobs"
    jobs.mkdir()

    def submit(name: str, body: str, nodelist: tuple[str, ...], **kw) -> str:
        folder = jobs / name
        folder.mkdir()
        script = folder / "job.sh"
        script.write_text(f"#!/bin/bash\n{body}\n")
        request = sc.SlurmJobRequest(name=name, script=script, workdir=folder, output=folder / "log",
                                     env_file=folder / "env", nodelist=nodelist,
                                     environment={"PATH": "/usr/bin:/bin"}, **kw)
        sc.write_env_file(request.env_file, request.environment)
        out = slurm.run(*sc.sbatch_argv(request)).stdout
        outputs.setdefault("sbatch-parsable.txt", out)
        return sc.parse_sbatch(out)

    def state(job_id: str) -> str:
        return sc.parse_scontrol_job(slurm.run(*sc.scontrol_job_argv(job_id)).stdout).state

    def wait_for(job_id: str, states: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while state(job_id) not in states:
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} is {state(job_id)}, not {states}")
            time.sleep(0.5)

    ids = {}
    ids["timeout"] = submit("timeout", "sleep 300", ("node3",), time_limit_seconds=60)
    ids["completed"] = submit("completed", "echo done", ("node1",))
    ids["failed"] = submit("failed", "exit 3", ("node1",))
    ids["cancelled"] = submit("cancelled", "sleep 300", ("node1",))
    ids["signalled"] = submit("signalled", "sleep 300", ("node1",))
    ids["running"] = submit("running", "sleep 300", ("node2",), gpus_per_node=4)
    for name in ("cancelled", "signalled", "running"):
        wait_for(ids[name], {"RUNNING"}, 20)
    ids["pending"] = submit("pending", "sleep 300", ("node2",), gpus_per_node=1)
    ids["two-nodes"] = submit("two-nodes", "srun sleep 300", ("node1", "node3"), gpus_per_node=1)
    slurm.run(*sc.scancel_argv(ids["cancelled"]))
    slurm.run(*sc.scancel_argv(ids["signalled"], "TERM"))
    wait_for(ids["two-nodes"], {"RUNNING"}, 20)
    for name in ("completed", "failed", "cancelled", "signalled"):
        wait_for(ids[name], sc.FINISHED_STATES, 20)
    wait_for(ids["timeout"], {"TIMEOUT"}, 150)
    time.sleep(1)
    outputs["squeue.json"] = slurm.run(*sc.squeue_argv(ids.values())).stdout
    for name, job_id in ids.items():
        outputs[f"scontrol-job-{name}.txt"] = slurm.run(*sc.scontrol_job_argv(job_id)).stdout
    accounting = slurm.run("sacct", check=False)
    outputs["sacct.txt"] = f"exit {accounting.returncode}\n{accounting.stdout}{accounting.stderr}"

    # Nodes: node1 down (its slurmd killed), node2 draining (a job still runs), node3 drained, node4 up.
    for name in ("pending", "two-nodes"):
        slurm.run(*sc.scancel_argv(ids[name]))
    wait_for(ids["two-nodes"], sc.FINISHED_STATES, 20)
    slurm.run(*sc.scontrol_update_node_argv("node2", "DRAIN", "draining for a test"))
    slurm.run(*sc.scontrol_update_node_argv("node3", "DRAIN", "test"))
    ids["pending-drained"] = submit("pending-drained", "true", ("node3",))
    slurm.kill_node("node1")
    deadline = time.monotonic() + 60
    while slurm.node_states().get("node1") != "down*":
        if time.monotonic() > deadline:
            raise RuntimeError(f"node1 is still {slurm.node_states().get('node1')}")
        time.sleep(0.5)
    outputs["scontrol-job-pending-drained.txt"] = slurm.run(*sc.scontrol_job_argv(ids["pending-drained"])).stdout
    outputs["sinfo.json"] = slurm.run(*sc.sinfo_argv()).stdout
    outputs["scontrol-nodes.txt"] = slurm.run(*sc.scontrol_nodes_argv()).stdout
    outputs["sinfo-nodes.txt"] = slurm.run("sinfo", "--Node", "--long").stdout


if __name__ == "__main__":
    main()
