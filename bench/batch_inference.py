"""Benchmark of batch inference: records/s of ``batch_infer.py`` against a plain Python loop over the same model.

Two models, both plain-Python handlers run by the serving runtime (``.venv/serving``):

- ``linear``: a scikit-learn LinearRegression on two features (vectorised: the model costs little per record,
  so this shows batch_infer's own overhead: reading and parsing JSON, pipes to the workers, writing results);
- ``cpu``: a handler spending about 0.1 ms of pure Python per record (a model whose cost dominates, where
  more workers pay off, up to the machine's cores).

The same records (JSONL files under a temporary folder) go through

- the plain loop: one process under the runtime's interpreter loads the same Predictor (``loaders.load_model``)
  and calls ``predict`` on batches of the same size over records already parsed in memory ("loop"), and
  again reading and parsing the files and writing one JSON line per result ("loop + files");
- ``batch_infer.py`` with 1 and with 2 workers, timed from the process's start to its end (interpreter start,
  worker start and model loading included).

Each figure is the median of ``--trials`` (3) runs.

    .venv/bin/python bench/batch_inference.py [--records 200000] [--files 20] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNTIME = REPO / ".venv" / "serving" / "bin" / "python"
RUNTIME_DIR = REPO / "scheduler" / "serving_runtime"

TRAIN = """
import pickle, sys
import numpy as np
from sklearn.linear_model import LinearRegression
x = np.random.default_rng(0).uniform(-5, 5, size=(64, 2))
with open(sys.argv[1], "wb") as f:
    pickle.dump(LinearRegression().fit(x, x @ np.array([3.0, 2.0]) + 1.0), f)
"""
LINEAR = """
import pickle
import numpy as np

def load(model_dir):
    with open(model_dir / "model.pkl", "rb") as f:
        return pickle.load(f)

def predict(model, instances):
    return model.predict(np.asarray(instances, dtype=float))
"""
CPU = """
def load(model_dir):
    return None

def predict(model, instances):
    out = []
    for a, b in instances:
        total = 0.0
        for i in range(400):  # about 0.1 ms of pure Python per record
            total += (a * i + b) % 7
        out.append(total)
    return out
"""
LOOP = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import loaders
model_dir, source, batch_size, with_files = Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
predictor = loaders.load_model(model_dir, "python", "python", "bench")
files = sorted(source.glob("*.jsonl"))
if not with_files:
    records = [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]
started = time.perf_counter()
count = 0
if with_files:
    out = Path(sys.argv[6])
    for f in files:
        records = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        lines = []
        for i in range(0, len(records), batch_size):
            for n, p in enumerate(predictor.predict(records[i:i + batch_size])):
                lines.append(json.dumps({"index": i + n, "prediction": p}) + "\\n")
        (out / (f.name + ".result.jsonl")).write_text("".join(lines))
        count += len(records)
else:
    for i in range(0, len(records), batch_size):
        predictor.predict(records[i:i + batch_size])
    count = len(records)
print(json.dumps({"records": count, "seconds": time.perf_counter() - started}))
"""


def make_model(folder: Path, kind: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "handler.py").write_text(LINEAR if kind == "linear" else CPU)
    if kind == "linear":
        subprocess.run([str(RUNTIME), "-c", TRAIN, str(folder / "model.pkl")], check=True)
    return folder


def make_records(folder: Path, records: int, files: int) -> Path:
    folder.mkdir(parents=True)
    rng = random.Random(0)
    per_file = records // files
    for n in range(files):
        lines = (json.dumps([round(rng.uniform(-5, 5), 4), round(rng.uniform(-5, 5), 4)]) for _ in range(per_file))
        (folder / f"part-{n:03d}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def loop(model: Path, source: Path, batch_size: int, with_files: bool, out: Path) -> float:
    out.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([str(RUNTIME), "-c", LOOP, str(RUNTIME_DIR), str(model), str(source), str(batch_size),
                             "1" if with_files else "0", str(out)], check=True, capture_output=True, text=True)
    figures = json.loads(result.stdout)
    return figures["records"] / figures["seconds"]


def batch_infer(model: Path, source: Path, batch_size: int, workers: int, out: Path, records: int):
    """records/s from the process's start to its end, and from the model loaded to the end."""
    started = time.perf_counter()
    subprocess.run([str(RUNTIME), str(RUNTIME_DIR / "batch_infer.py"), "--model-dir", str(model), "--name", "bench",
                    "--framework", "python", "--format", "python", "--input", str(source), "--input-type", "jsonl",
                    "--output", str(out), "--batch-size", str(batch_size), "--workers", str(workers)],
                   check=True, capture_output=True, cwd=RUNTIME_DIR)
    seconds = time.perf_counter() - started
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["records"] == records and summary["errors"] == 0, summary
    return records / seconds, records / (summary["seconds"] - summary["load_seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000, help="records for the linear model")
    parser.add_argument("--cpu-records", type=int, default=20_000, help="records for the cpu model")
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    if not RUNTIME.exists():
        sys.exit(f"no serving runtime at {RUNTIME}: run scripts/install.sh")
    print(f"batch inference: Python {platform.python_version()}, {os.cpu_count()} CPUs, batch size {args.batch_size}, "
          f"{args.files} JSONL files, records/s, median of {args.trials}\n")
    print(f"| model | records | {' | '.join(COLUMNS)} |")
    print("|---|---:|" + "---:|" * len(COLUMNS))
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        root = Path(tmp)
        for kind, records in (("linear", args.records), ("cpu", args.cpu_records)):
            model = make_model(root / kind / "model", kind)
            source = make_records(root / kind / "in", records, args.files)
            total = records // args.files * args.files
            figures: dict[str, list[float]] = {column: [] for column in COLUMNS}
            for trial in range(args.trials):
                out = root / kind / f"out-{trial}"
                figures["loop"].append(loop(model, source, args.batch_size, False, out / "loop"))
                figures["loop + files"].append(loop(model, source, args.batch_size, True, out / "loop-files"))
                for workers in (1, 2):
                    whole, loaded = batch_infer(model, source, args.batch_size, workers, out / f"w{workers}", total)
                    figures[f"batch_infer w={workers}"].append(whole)
                    figures[f"w={workers} after load"].append(loaded)
            cells = " | ".join(f"{statistics.median(figures[c]):,.0f}" for c in COLUMNS)
            print(f"| {kind} | {total:,} | {cells} |", flush=True)


COLUMNS = ("loop", "loop + files", "batch_infer w=1", "w=1 after load", "batch_infer w=2", "w=2 after load")


if __name__ == "__main__":
    main()
