"""The serving runtime: artifact checks, KServe model servers and batch inference, as real processes.

Model servers and batch jobs run under the runtime's own interpreter (``.venv/serving``, made by
scripts/install.sh) exactly as the platform starts them; a missing runtime fails these tests, it is never a
reason to skip.  The artifact checks run in-process, as the platform imports them when a model is created.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import requests

from nothing.scheduler.runtime_jobs import RUNTIME_DIR, RUNTIME_FILES
from nothing.scheduler.serving_runtime import batch_infer
from nothing.scheduler.serving_runtime.artifacts import ArtifactError, inspect

REPO = Path(__file__).resolve().parent.parent
RUNTIME = REPO / ".venv" / "serving" / "bin" / "python"
WEIGHTS = [[3.0, 2.0], 1.0]  # the linear model the tests train: y = 3 a + 2 b + 1

TRAIN = """
import pickle, sys
import numpy as np
from sklearn.linear_model import LinearRegression
x = np.random.default_rng(0).uniform(-5, 5, size=(64, 2))
model = LinearRegression().fit(x, x @ np.array([3.0, 2.0]) + 1.0)
with open(sys.argv[1], "wb") as f:
    pickle.dump(model, f)
"""

SKLEARN_HANDLER = """
import pickle, time
import numpy as np

def load(model_dir):
    with open(model_dir / "model.pkl", "rb") as f:
        return pickle.load(f)

def predict(model, instances):
    if any(x == [0, -1] for x in instances):  # the tests' slow record
        time.sleep(60)
    return model.predict(np.asarray(instances, dtype=float)).round(6)
"""


@pytest.fixture(scope="module")
def runtime() -> Path:
    probe = subprocess.run([str(RUNTIME), "-c", "import kserve, numpy, sklearn"], capture_output=True, text=True) \
        if RUNTIME.exists() else None
    if probe is None or probe.returncode:
        pytest.fail(f"the serving runtime {RUNTIME} is missing or broken: run scripts/install.sh (it makes "
                    f".venv/serving){': ' + probe.stderr.strip().splitlines()[-1] if probe else ''}", pytrace=False)
    return RUNTIME


def runtime_has(module: str) -> bool:
    return subprocess.run([str(RUNTIME), "-c", f"import {module}"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def sklearn_model(runtime, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("linear")
    subprocess.run([str(runtime), "-c", TRAIN, str(folder / "model.pkl")], check=True, timeout=60)
    (folder / "handler.py").write_text(SKLEARN_HANDLER)
    return folder


def expected(instance: list[float]) -> float:
    (a, b), c = WEIGHTS
    return round(a * instance[0] + b * instance[1] + c, 6)


def run_script(runtime: Path, script: str, *args, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(runtime), str(RUNTIME_DIR / script), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=RUNTIME_DIR, **kwargs)


# ---------------------------------------------------------------- artifacts.inspect


def write(folder: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return folder


PYTHON_HANDLER = "def load(model_dir):\n    return 2\n\ndef predict(model, instances):\n    return [model * x for x in instances]\n"
TORCH_HANDLER = "class Handler:\n    def initialize(self, context): ...\n    def handle(self, data, context): ...\n"


def make_mar(folder: Path, model_name: str, manifest: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / f"{model_name}.mar", "w") as zf:
        zf.writestr("handler.py", TORCH_HANDLER)
        zf.writestr("model.pt", b"weights")
        if manifest:
            zf.writestr("MAR-INF/MANIFEST.json", json.dumps({"model": {
                "modelName": model_name, "serializedFile": "model.pt", "handler": "handler.py"}}))
    return folder


@pytest.mark.parametrize("framework, files, fmt", [
    ("tensorflow", {"saved_model.pb": b"pb", "variables/variables.index": b""}, "savedmodel"),
    ("tensorflow", {"saved_model.pb": b"pb"}, "savedmodel"),
    ("pytorch", {"model.py": "import torch\n", "handler.py": TORCH_HANDLER, "mnist.pth": b"w",
                 "requirements.txt": "", "extra/labels.json": "[]"}, "pytorch"),
    ("pytorch", {"model.py": "", "handler.py": "def handle(data, context):\n    return data\n", "w.bin": b""},
     "pytorch"),
    ("python", {"handler.py": PYTHON_HANDLER, "model.pkl": b""}, "python"),
])
def test_inspect_names_the_format_of_a_complete_artifact(tmp_path, framework, files, fmt):
    assert inspect(write(tmp_path, files), framework, "mnist") == fmt


def test_a_pytorch_folder_with_one_mar_named_as_the_model_is_a_mar(tmp_path):
    assert inspect(make_mar(tmp_path, "mnist"), "pytorch", "mnist") == "mar"


@pytest.mark.parametrize("framework, files, message", [
    ("tensorflow", {"variables/x": ""}, "saved_model.pb is missing"),
    ("pytorch", {"model.py": "", "handler.py": TORCH_HANDLER}, "missing: a weight file (.pt, .pth or .bin)"),
    ("pytorch", {"handler.py": TORCH_HANDLER, "m.pt": ""}, "missing: model.py"),
    ("pytorch", {"model.py": "", "handler.py": TORCH_HANDLER, "a.pt": "", "b.pt": ""}, "a.pt, b.pt"),
    ("pytorch", {"model.py": "", "handler.py": "x = 1\n", "a.pt": ""}, "must define a TorchServe handler"),
    ("python", {"model.pkl": ""}, "needs handler.py"),
    ("python", {"handler.py": "def load(model_dir):\n    return 1\n"}, "defines no function predict"),
    ("python", {"handler.py": "def load():\n    pass\ndef predict(m, x):\n    pass\n"}, "load must take 1"),
    ("python", {"handler.py": "def load(model_dir)\n"}, "handler.py line 1"),
    ("keras", {"handler.py": PYTHON_HANDLER}, "use one of tensorflow, pytorch, python"),
])
def test_inspect_refuses_an_incomplete_artifact_naming_what_is_missing(tmp_path, framework, files, message):
    with pytest.raises(ArtifactError) as refused:
        inspect(write(tmp_path, files), framework, "mnist")
    assert message in str(refused.value)


def test_a_mar_archiving_another_model_name_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match="archives the model 'resnet' but the model is named 'mnist'"):
        inspect(make_mar(tmp_path, "resnet"), "pytorch", "mnist")


def test_a_mar_without_manifest_or_with_two_archives_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match="has no MAR-INF/MANIFEST.json"):
        inspect(make_mar(tmp_path / "a", "mnist", manifest=False), "pytorch", "mnist")
    make_mar(tmp_path / "b", "mnist")
    make_mar(tmp_path / "b", "other")
    with pytest.raises(ArtifactError, match="exactly one .mar archive"):
        inspect(tmp_path / "b", "pytorch", "mnist")


def test_a_mar_whose_members_escape_the_folder_is_refused(tmp_path):
    make_mar(tmp_path, "mnist")
    with zipfile.ZipFile(tmp_path / "mnist.mar", "a") as zf:
        zf.writestr("../../evil.py", "")
    with pytest.raises(ArtifactError, match="a path outside the archive: ../../evil.py"):
        inspect(tmp_path, "pytorch", "mnist")


def test_a_symlink_out_of_the_model_folder_is_refused_one_inside_is_not(tmp_path):
    model = write(tmp_path / "model", {"handler.py": PYTHON_HANDLER, "data/w.pkl": ""})
    (model / "inside.pkl").symlink_to(model / "data" / "w.pkl")
    assert inspect(model, "python", "m") == "python"
    write(tmp_path / "secret", {"key": "x"})
    (model / "data" / "leak").symlink_to(tmp_path / "secret")
    with pytest.raises(ArtifactError, match="data/leak is a symlink out of the model folder"):
        inspect(model, "python", "m")


def test_inspect_does_not_run_the_users_code(tmp_path):
    marker = tmp_path / "ran"
    handler = f"open({str(marker)!r}, 'w')\n" + PYTHON_HANDLER
    assert inspect(write(tmp_path / "m", {"handler.py": handler}), "python", "m") == "python"
    assert not marker.exists()


def test_the_runtime_files_packed_into_runs_exist_and_import_only_the_stdlib_kserve_numpy_and_each_other():
    import ast

    allowed = {"kserve", "numpy", "torch", "tensorflow", *(name[:-3] for name in RUNTIME_FILES)}
    for name in RUNTIME_FILES:
        tree = ast.parse((RUNTIME_DIR / name).read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for module in names:
                top = module.split(".")[0]
                assert top in allowed or top in sys.stdlib_module_names, f"{name} imports {module}"


# ---------------------------------------------------------------- model_server.py


def start_server(runtime: Path, model_dir: Path, port_file: Path, name: str = "linear",
                 source: Path = RUNTIME_DIR) -> subprocess.Popen:
    """``model_server.py`` run from ``source`` (its working folder), as the platform runs a replica."""
    return subprocess.Popen([str(runtime), str(source / "model_server.py"), "--name", name, "--framework", "python",
                             "--format", "python", "--port-file", str(port_file)],
                            env={**os.environ, "EM_DATASET_MODEL": str(model_dir)}, cwd=source,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_port_file(process: subprocess.Popen, port_file: Path, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while not port_file.exists():
        if process.poll() is not None:
            pytest.fail(f"the model server exited with {process.returncode}: {process.stderr.read()}")
        if time.monotonic() > deadline:
            pytest.fail("the model server wrote no port file in time")
        time.sleep(0.05)
    return json.loads(port_file.read_text())


@pytest.fixture(scope="module")
def server(runtime, sklearn_model, tmp_path_factory):
    port_file = tmp_path_factory.mktemp("server") / "replica" / "port.json"
    process = start_server(runtime, sklearn_model, port_file)
    where = wait_for_port_file(process, port_file)
    yield {"url": f"http://{where['host']}:{where['port']}", "where": where, "process": process}
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


def test_the_port_file_says_where_the_loaded_model_listens(server):
    assert server["where"]["host"] == "127.0.0.1"
    assert server["where"]["pid"] == server["process"].pid
    assert 0 < server["where"]["port"] < 65536


def test_v1_predict_answers_the_models_predictions_in_order(server):
    instances = [[1, 1], [0, 0], [-2, 3.5]]
    response = requests.post(f"{server['url']}/v1/models/linear:predict", json={"instances": instances}, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [expected(x) for x in instances]}


def test_v2_infer_takes_the_rows_of_the_first_input_as_instances(server):
    body = {"id": "req-1", "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [1, 1, 4, 0]}]}
    response = requests.post(f"{server['url']}/v2/models/linear/infer", json=body, timeout=10)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model_name"] == "linear" and answer["id"] == "req-1"
    (output,) = answer["outputs"]
    assert output["name"] == "output-0" and output["shape"] == [2]
    assert output["data"] == [expected([1, 1]), expected([4, 0])]


def test_the_server_is_ready_and_describes_its_model(server):
    assert requests.get(f"{server['url']}/v2/health/ready", timeout=10).json()["ready"] is True
    assert requests.get(f"{server['url']}/v1/models/linear", timeout=10).json() == {"name": "linear", "ready": True}
    missing = requests.post(f"{server['url']}/v1/models/other:predict", json={"instances": [[1, 1]]}, timeout=10)
    assert missing.status_code == 404


def test_a_body_without_instances_is_a_400_saying_what_is_expected(server):
    response = requests.post(f"{server['url']}/v1/models/linear:predict", json={"rows": [[1, 1]]}, timeout=10)
    assert response.status_code == 400
    assert "instances" in response.json()["error"]


def test_a_replica_given_a_secret_answers_only_requests_that_carry_it(runtime, tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in RUNTIME_FILES:
        shutil.copy(RUNTIME_DIR / name, source / name)
    (source / "replica.token").write_text("s3cret\n")
    process = start_server(runtime, write(tmp_path / "m", {"handler.py": PYTHON_HANDLER}), tmp_path / "port.json",
                           name="double", source=source)
    try:
        where = wait_for_port_file(process, tmp_path / "port.json")
        url = f"http://{where['host']}:{where['port']}"
        predict = f"{url}/v1/models/double:predict"
        assert requests.post(predict, json={"instances": [1]}, timeout=10).status_code == 403
        assert requests.get(f"{url}/v2/health/ready", timeout=10).status_code == 403
        wrong = requests.post(predict, json={"instances": [1]}, headers={"X-Nothing-Replica": "guess"}, timeout=10)
        assert wrong.status_code == 403
        right = requests.post(predict, json={"instances": [1, 2.5]}, headers={"X-Nothing-Replica": "s3cret"},
                              timeout=10)
        assert right.json() == {"predictions": [2, 5.0]}
    finally:
        process.kill()
        process.wait(timeout=10)


def test_a_handler_whose_load_raises_exits_nonzero_with_the_reason_last_on_stderr(runtime, tmp_path):
    model = write(tmp_path / "m", {"handler.py": "def load(model_dir):\n    raise RuntimeError('no GPU memory left')\n"
                                                 "def predict(model, instances):\n    return instances\n"})
    process = start_server(runtime, model, tmp_path / "port.json")
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    assert stderr.strip().splitlines()[-1] == \
        "model_server: cannot load model 'linear': RuntimeError: no GPU memory left"
    assert not (tmp_path / "port.json").exists()


def test_an_artifact_that_does_not_match_its_format_is_refused_by_the_server(runtime, tmp_path):
    model = write(tmp_path / "m", {"handler.py": PYTHON_HANDLER})
    result = run_script(runtime, "model_server.py", "--name", "m", "--framework", "python", "--format", "savedmodel",
                        "--model-dir", model, "--port-file", tmp_path / "p.json")
    assert result.returncode == 1
    assert "holds a 'python' python model, not 'savedmodel'" in result.stderr


@pytest.mark.parametrize("framework, fmt, module", [
    ("pytorch", "pytorch", "torch"), ("pytorch", "mar", "torch"), ("tensorflow", "savedmodel", "tensorflow"),
])
def test_a_framework_missing_from_the_runtime_is_named_with_how_to_install_it(runtime, tmp_path, framework, fmt,
                                                                               module):
    # The runtime is what scheduler/serving_runtime/requirements.txt installs: no torch, no tensorflow.
    assert not runtime_has(module), f"{module} is in the serving runtime: its absence cannot be shown here"
    if fmt == "mar":
        model = make_mar(tmp_path / "m", "m")
    else:
        model = write(tmp_path / "m", {"saved_model.pb": b""} if fmt == "savedmodel" else
                      {"model.py": "", "handler.py": TORCH_HANDLER, "m.pt": b""})
    result = run_script(runtime, "model_server.py", "--name", "m", "--framework", framework, "--format", fmt,
                        "--model-dir", model, "--port-file", tmp_path / "p.json")
    assert result.returncode == 1
    prefix = RUNTIME.parent.parent
    assert result.stderr.strip().splitlines()[-1] == (
        f"model_server: cannot load model 'm': the serving runtime has no {module}; install it into {prefix}: "
        f"{prefix}/bin/pip install {module}")


# ---------------------------------------------------------------- batch_infer.py


@pytest.mark.parametrize("pattern, path, matches", [
    ("**/*.json", "a.json", True), ("**/*.json", "x/y/a.json", True), ("**/*.json", "a.jsonl", False),
    ("*.json", "x/a.json", False), ("x/**", "x/y/z.json", True), ("x/**/b?.json", "x/b1.json", True),
    ("data/[!t]*.json", "data/train.json", False), ("data/[a-s]*.json", "data/r.json", True),
])
def test_globs_match_relative_paths_with_double_star_spanning_folders(pattern, path, matches):
    assert bool(batch_infer.glob_regex(pattern).match(path)) is matches


def batch(runtime: Path, model: Path, source: Path, output: Path, *options, timeout: float = 60):
    return run_script(runtime, "batch_infer.py", "--model-dir", model, "--name", "linear", "--framework", "python",
                      "--format", "python", "--input", source, "--output", output, *options, timeout=timeout)


def results(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def inputs(tmp_path) -> Path:
    source = tmp_path / "in"
    write(source, {
        "a.json": json.dumps([[1, 1], [2, 0], [0, 3]]),
        "nested/b.json": json.dumps({"instances": [[5, 5]]}),
        "nested/skip/c.json": json.dumps([[9, 9]]),
        "broken.json": "[[1, 1], ",
        "d.jsonl": "[1, 2]\n\n[3, 4]\nnot json\n[5, 6]\n",
        "notes.txt": "[[1, 1]]",
    })
    return source


def test_batch_inference_writes_one_result_per_record_in_order_skipping_excluded_files(runtime, sklearn_model,
                                                                                      inputs, tmp_path):
    output = tmp_path / "out"
    result = batch(runtime, sklearn_model, inputs, output, "--input-type", "json", "--include", "**/*.json",
                   "--include", "nested/skip/*.json", "--exclude", "**/skip/**", "--batch-size", "2",
                   "--workers", "2")
    assert result.returncode == 0, result.stderr
    written = sorted(p.relative_to(output).as_posix() for p in output.rglob("*") if p.is_file())
    assert written == ["_summary.json", "a.json.result.jsonl", "broken.json.result.jsonl",
                       "nested/b.json.result.jsonl"]
    assert results(output / "a.json.result.jsonl") == [
        {"index": 0, "prediction": expected([1, 1])}, {"index": 1, "prediction": expected([2, 0])},
        {"index": 2, "prediction": expected([0, 3])}]
    assert results(output / "nested/b.json.result.jsonl") == [{"index": 0, "prediction": expected([5, 5])}]
    (broken,) = results(output / "broken.json.result.jsonl")
    assert broken["index"] == 0 and broken["error"].startswith("invalid JSON")
    summary = json.loads((output / "_summary.json").read_text())
    assert {k: summary[k] for k in ("files", "files_matched", "records", "errors", "timed_out")} == \
        {"files": 3, "files_matched": 3, "records": 5, "errors": 1, "timed_out": False}
    assert summary["per_file"] == {"a.json": {"records": 3, "errors": 0}, "broken.json": {"records": 1, "errors": 1},
                                   "nested/b.json": {"records": 1, "errors": 0}}
    assert summary["records_per_second"] > 0 and summary["seconds"] > 0


def test_jsonl_lines_keep_their_line_numbers_and_a_bad_line_is_an_error_record(runtime, sklearn_model, inputs,
                                                                               tmp_path, server):
    output = tmp_path / "out"
    result = batch(runtime, sklearn_model, inputs, output, "--input-type", "jsonl", "--batch-size", "3")
    assert result.returncode == 0, result.stderr
    lines = results(output / "d.jsonl.result.jsonl")
    assert [(r["index"], r["line"]) for r in lines] == [(0, 1), (1, 3), (2, 4), (3, 5)]
    assert lines[2]["error"].startswith("invalid JSON")
    online = requests.post(f"{server['url']}/v1/models/linear:predict",
                           json={"instances": [[1, 2], [3, 4], [5, 6]]}, timeout=10).json()["predictions"]
    assert [lines[i]["prediction"] for i in (0, 1, 3)] == online == [expected([1, 2]), expected([3, 4]),
                                                                     expected([5, 6])]
    summary = json.loads((output / "_summary.json").read_text())
    assert (summary["files"], summary["records"], summary["errors"]) == (1, 4, 1)


def test_a_batch_past_the_timeout_gets_timeout_errors_while_the_other_records_succeed(runtime, sklearn_model,
                                                                                     tmp_path):
    records = [[1, 0], [0, -1], [2, 0], [3, 0], [4, 0], [5, 0]]  # the first worker's share: 1, slow, 2
    source = write(tmp_path / "in", {"r.jsonl": "\n".join(json.dumps(x) for x in records)})
    started = time.monotonic()
    result = batch(runtime, sklearn_model, source, tmp_path / "out", "--input-type", "jsonl", "--batch-size", "1",
                   "--timeout", "1.5", "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 30  # the slow record sleeps 60 s: its worker was killed, not awaited
    lines = results(tmp_path / "out" / "r.jsonl.result.jsonl")
    assert lines[1] == {"index": 1, "line": 2, "error": "timeout after 1.5s"}
    assert [r["prediction"] for i, r in enumerate(lines) if i != 1] == [expected([n, 0]) for n in (1, 2, 3, 4, 5)]


def test_a_batch_that_raises_and_a_prediction_that_is_not_json_become_error_records(runtime, tmp_path):
    model = write(tmp_path / "m", {"handler.py": (
        "def load(model_dir):\n    return None\n\n"
        "def predict(model, instances):\n"
        "    if 'boom' in instances:\n        raise ValueError('cannot score boom')\n"
        "    return [object() if x == 'thing' else x.upper() for x in instances]\n")})
    source = write(tmp_path / "in", {"r.json": json.dumps(["a", "boom", "thing", "b"])})
    result = batch(runtime, model, source, tmp_path / "out", "--batch-size", "1")
    assert result.returncode == 0, result.stderr
    assert results(tmp_path / "out" / "r.json.result.jsonl") == [
        {"index": 0, "prediction": "A"}, {"index": 1, "error": "ValueError: cannot score boom"},
        {"index": 2, "error": "the prediction is not JSON: object is not JSON"}, {"index": 3, "prediction": "B"}]


def test_max_seconds_ends_the_job_with_status_3_and_no_partial_result_file(runtime, sklearn_model, tmp_path):
    source = write(tmp_path / "in", {"r.jsonl": "[1, 0]\n[0, -1]\n[2, 0]\n"})
    output = tmp_path / "out"
    result = batch(runtime, sklearn_model, source, output, "--input-type", "jsonl", "--batch-size", "1",
                   "--timeout", "60", "--max-seconds", "3")
    assert result.returncode == 3, result.stderr
    assert sorted(p.name for p in output.iterdir()) == ["_summary.json"]
    summary = json.loads((output / "_summary.json").read_text())
    assert summary["timed_out"] is True and summary["files"] == 0 and summary["files_matched"] == 1


def test_a_rerun_over_the_same_output_replaces_the_results(runtime, sklearn_model, tmp_path):
    source = write(tmp_path / "in", {"a.json": "[[1, 1]]"})
    output = write(tmp_path / "out", {"a.json.result.jsonl": '{"index": 0, "prediction": "stale"}\n',
                                      ".a.json.result.jsonl.partial": "half a li"})
    assert batch(runtime, sklearn_model, source, output).returncode == 0
    assert results(output / "a.json.result.jsonl") == [{"index": 0, "prediction": expected([1, 1])}]
    assert sorted(p.name for p in output.iterdir()) == ["_summary.json", "a.json.result.jsonl"]


def test_no_matching_file_is_status_2_with_the_patterns_named(runtime, sklearn_model, inputs, tmp_path):
    result = batch(runtime, sklearn_model, inputs, tmp_path / "out", "--include", "**/*.csv")
    assert result.returncode == 2
    assert "no file under" in result.stderr and "**/*.csv" in result.stderr


def test_a_model_that_does_not_load_fails_the_batch_job_with_the_reason(runtime, tmp_path, inputs):
    assert not runtime_has("torch"), "torch is in the serving runtime: its absence cannot be shown here"
    model = write(tmp_path / "m", {"model.py": "", "handler.py": TORCH_HANDLER, "m.pt": b""})
    result = run_script(runtime, "batch_infer.py", "--model-dir", model, "--name", "m", "--framework", "pytorch",
                        "--format", "pytorch", "--input", inputs, "--output", tmp_path / "out")
    assert result.returncode == 1
    assert "batch_infer: cannot load model 'm': the serving runtime has no torch" in result.stderr
