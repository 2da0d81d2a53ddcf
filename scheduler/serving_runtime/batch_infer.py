"""Batch inference (EasyMaker's 배치 추론): every matching input file's records through the model, one result file each.

    batch_infer.py --name NAME --framework F --format FMT --input DIR --input-type json|jsonl --output DIR
                   [--include GLOB]... [--exclude GLOB]... [--batch-size N] [--timeout S] [--workers N]
                   [--max-seconds S] [--model-dir DIR (default $EM_DATASET_MODEL)]

Input files: the regular files under --input whose path relative to it matches an --include glob and no
--exclude glob (exclude wins, as in EasyMaker; ``**`` spans folders).  A JSON file holds a list of records or
``{"instances": [...]}``; a JSONL file one record per non-empty line.  Output: ``<output>/<path>.result.jsonl``
per input file, a line per record in input order, ``{"index": i, "prediction": ...}`` or
``{"index": i, "error": "..."}`` (JSONL adds ``"line": n``), and ``<output>/_summary.json``.

Workers are processes, each loading the model (the same loader as the model server), fed batches of
--batch-size records.  A batch that takes longer than --timeout gets a timeout error per record and its worker
is killed and replaced: a thread stuck in user code cannot be stopped, a process can.  Unreadable records and
failed batches become error records, never a failed job.  Result files appear whole (written aside, then
renamed), so a rerun over the same output simply replaces them.  Exit status: 0 all files processed (errors
included), 1 the model did not load, 2 no input file, 3 --max-seconds reached (the summary says timed_out).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import signal
import sys
import time
import traceback
from collections import deque
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_LOAD_FAILED, EXIT_NO_INPUT, EXIT_TIMED_OUT = 0, 1, 2, 3
DEFAULT_INCLUDE = {"json": "**/*.json", "jsonl": "**/*.jsonl"}
SUMMARY = "_summary.json"
RESULT_SUFFIX = ".result.jsonl"
READ_AHEAD = 20_000  # records parsed before the workers ask for them
CHUNK_BATCHES, CHUNK_RECORDS = 8, 256  # batches sent to a worker at once: up to 8, up to about 256 records


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run a model over folders of JSON or JSONL records.")
    parser.add_argument("--model-dir", type=Path, default=os.environ.get("EM_DATASET_MODEL"),
                        help="the model's artifact folder (default: $EM_DATASET_MODEL)")
    parser.add_argument("--name", required=True, help="the model's name")
    parser.add_argument("--framework", required=True, help="tensorflow, pytorch or python")
    parser.add_argument("--format", required=True, dest="fmt", help="savedmodel, pytorch, mar or python")
    parser.add_argument("--input", type=Path, required=True, help="the folder of input files")
    parser.add_argument("--input-type", choices=("json", "jsonl"), default="json")
    parser.add_argument("--include", action="append", default=[], metavar="GLOB",
                        help="files to read, relative to --input (default **/*.json or **/*.jsonl); repeatable")
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                        help="files to skip even when included; repeatable")
    parser.add_argument("--output", type=Path, required=True, help="the folder for result files and the summary")
    parser.add_argument("--batch-size", type=positive(int), default=32, help="records per inference request")
    parser.add_argument("--timeout", type=positive(float), default=120.0,
                        help="seconds one inference request may take (default 120)")
    parser.add_argument("--workers", type=positive(int), default=1, help="model processes (default 1)")
    parser.add_argument("--max-seconds", type=positive(float), default=None,
                        help="end the whole job after this many seconds (exit status 3)")
    args = parser.parse_args(argv)
    if args.model_dir is None:
        parser.error("--model-dir is required when EM_DATASET_MODEL is not set")
    args.include = args.include or [DEFAULT_INCLUDE[args.input_type]]
    return args


def positive(kind):
    def convert(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, not {text}")
        return value
    convert.__name__ = kind.__name__
    return convert


def glob_regex(pattern: str) -> re.Pattern:
    """A compiled glob over relative POSIX paths: ``*``, ``?`` and ``[...]`` stay within a folder name, ``**``
    as a whole path segment spans any number of folders (``**/*.json`` matches ``a.json`` and ``x/y/a.json``)."""
    pattern = pattern.strip().lstrip("/")
    while pattern.startswith("./"):
        pattern = pattern[2:]
    out, i, n = [], 0, len(pattern)
    while i < n:
        at_segment = i == 0 or pattern[i - 1] == "/"
        if at_segment and pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif at_segment and pattern.startswith("**", i) and i + 2 == n:
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2:]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1:end]
            negate = body[:1] == "!"
            body = body[1:] if negate else body
            out.append(f"(?!/)[{'^' if negate else ''}{re.escape(body).replace(chr(92) + '-', '-')}]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def find_files(root: Path, includes: list[str], excludes: list[str], skip: Path | None = None) -> list[str]:
    """Relative POSIX paths of the regular files under ``root`` that an include matches and no exclude does,
    sorted; the folder ``skip`` (the output, when it lies inside the input) is not entered."""
    include = [glob_regex(p) for p in includes]
    exclude = [glob_regex(p) for p in excludes]
    skipped = os.path.realpath(skip) if skip else None
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.realpath(os.path.join(folder, d)) != skipped]
        for name in files:
            path = os.path.join(folder, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            relative = Path(path).relative_to(root).as_posix()
            if any(r.match(relative) for r in include) and not any(r.match(relative) for r in exclude):
                found.append(relative)
    return sorted(found)


class InputFile:
    """One input file's records and, slot by slot, their results; written out once every slot is filled."""

    def __init__(self, relative: str, input_type: str):
        self.relative = relative
        self.input_type = input_type
        self.results: list[str] = []  # per record, its result line (or its start, until answered)
        self.pending: list[tuple[int, Any]] = []  # (slot, instance) still to predict
        self.remaining = 0
        self.errors = 0

    def read(self, root: Path) -> None:
        try:
            text = (root / self.relative).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            self.add(None, error=f"cannot read the file: {e}")
            return
        if self.input_type == "jsonl":
            for number, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    self.parse(line, number)
            return
        try:
            data = json.loads(text)
        except ValueError as e:
            self.add(None, error=f"invalid JSON: {e}")
            return
        if isinstance(data, dict) and isinstance(data.get("instances"), list):
            data = data["instances"]
        if not isinstance(data, list):
            self.add(None, error='a JSON input file holds a list of records or {"instances": [...]}')
            return
        for instance in data:
            self.add(None, instance=instance)

    def parse(self, line: str, number: int) -> None:
        try:
            instance = json.loads(line)
        except ValueError as e:
            self.add(number, error=f"invalid JSON: {e}")
            return
        self.add(number, instance=instance)

    def add(self, line: int | None, instance: Any = None, error: str | None = None) -> None:
        """A record's slot: its result line's start (index, line) until it is answered, then the whole line."""
        start = f'{{"index": {len(self.results)}' + (f', "line": {line}' if line is not None else "")
        if error is None:
            self.pending.append((len(self.results), instance))
            self.remaining += 1
            self.results.append(start)
        else:
            self.errors += 1
            self.results.append(f'{start}, "error": {encode(error)}}}')

    def answer(self, slot: int, prediction: str | None = None, error: str | None = None) -> None:
        """Complete a slot with its prediction (already JSON, encoded by the worker) or its error."""
        if error is None:
            self.results[slot] += f', "prediction": {prediction}}}'
        else:
            self.results[slot] += f', "error": {encode(error)}}}'
            self.errors += 1
        self.remaining -= 1

    def write(self, output: Path) -> None:
        write_atomically(output / (self.relative + RESULT_SUFFIX), "".join(line + "\n" for line in self.results))
        self.results = []


def plain(value: Any) -> Any:
    """JSON for what models return besides Python's own types: numpy (and torch) scalars and arrays."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")


encode = json.JSONEncoder(ensure_ascii=False, default=plain).encode  # json.dumps(default=...) makes one a call


def encode_predictions(predictions: list) -> list:
    """Each prediction as JSON text, or ``("error", why)`` for one that is not JSON: done in the worker, which
    spares the main process the work and never sends it objects of classes only the handler knows."""
    encoded: list = []
    for prediction in predictions:
        try:
            encoded.append(encode(prediction))
        except (TypeError, ValueError) as e:
            encoded.append(("error", f"the prediction is not JSON: {e}"))
    return encoded


def write_atomically(path: Path, text: str) -> None:
    """Write beside ``path`` under a hidden name, then rename: readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


class Batch:
    def __init__(self, slots: list[tuple[InputFile, int]], instances: list):
        self.slots = slots
        self.instances = instances

    def answer(self, encoded: list | None = None, error: str | None = None) -> None:
        """Record the worker's answer: a batch error, or per record its JSON or ``("error", why)``."""
        for n, (file, slot) in enumerate(self.slots):
            item = encoded[n] if encoded is not None else ("error", error)
            if isinstance(item, str):
                file.answer(slot, item)
            else:
                file.answer(slot, error=item[1])


class Feed:
    """Records of the input files in order, cut into batches (which may span files).  Files are read whole, in
    order, as the workers need their records and a little ahead (while the workers load the model or predict);
    each result file is written as soon as its last record is answered."""

    def __init__(self, root: Path, files: list[str], input_type: str, batch_size: int, output: Path,
                 read_ahead: int):
        self.root, self.unread, self.input_type = root, deque(files), input_type
        self.batch_size, self.output, self.read_ahead = batch_size, output, read_ahead
        self.queue: deque[tuple[InputFile, int, Any]] = deque()
        self.returned: deque[Batch] = deque()  # batches a killed worker had not started: first to go again
        self.open: list[InputFile] = []
        self.done: dict[str, dict] = {}
        self.records = self.errors = 0

    def read_next(self) -> bool:
        """Read one more file if fewer than ``read_ahead`` records wait; whether one was read."""
        if not self.unread or len(self.queue) >= self.read_ahead:
            return False
        file = InputFile(self.unread.popleft(), self.input_type)
        file.read(self.root)
        self.open.append(file)
        self.queue.extend((file, slot, instance) for slot, instance in file.pending)
        file.pending = []
        return True

    def next_batches(self, count: int) -> list[Batch]:
        batches = [self.returned.popleft() for _ in range(min(count, len(self.returned)))]
        while len(batches) < count:
            while len(self.queue) < self.batch_size and self.read_next():
                pass
            if not self.queue:
                break
            taken = [self.queue.popleft() for _ in range(min(self.batch_size, len(self.queue)))]
            batches.append(Batch([(file, slot) for file, slot, _ in taken], [instance for _, _, instance in taken]))
        return batches

    def share(self, chunk: int, workers: int) -> int:
        """How many batches to send an idle worker: a whole chunk while there is plenty, an even share of what
        is left at the end (so one worker does not take it all while the others wait)."""
        if self.unread:
            return chunk
        left = len(self.returned) + -(-len(self.queue) // self.batch_size)
        return max(1, min(chunk, -(-left // workers)))

    def give_back(self, batches: list[Batch]) -> None:
        self.returned.extendleft(reversed(batches))

    def finish(self) -> None:
        """Write out every open file whose records are all answered."""
        still_open = []
        for file in self.open:
            if file.remaining:
                still_open.append(file)
                continue
            count = len(file.results)
            file.write(self.output)
            self.done[file.relative] = {"records": count, "errors": file.errors}
            self.records += count
            self.errors += file.errors
        self.open = still_open

    @property
    def exhausted(self) -> bool:
        return not self.unread and not self.queue and not self.returned and not self.open


def worker_main(conn, model_dir: Path, framework: str, fmt: str, name: str) -> None:
    """A worker process: load the model, say ready, then answer each batch of every chunk it is sent, one
    message per batch, until the pipe closes."""
    import loaders

    try:
        predictor = loaders.load_model(model_dir, framework, fmt, name)
    except loaders.LoadError as e:
        conn.send(("load-error", str(e)))
        return
    except Exception as e:
        traceback.print_exc()
        conn.send(("load-error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready",))
    while True:
        try:
            chunk = conn.recv()
        except (EOFError, OSError):
            return
        for instances in chunk:
            try:
                conn.send(("result", encode_predictions(predictor.predict(instances))))
            except Exception as e:
                conn.send(("error", f"{type(e).__name__}: {e}"))


class Worker:
    """One model process and the batches sent to it, the first of which it is working on.

    A worker is sent several batches at once (a chunk) so it never waits on the main process between them;
    the main process sends only to a worker that has answered all it was sent, so neither ever blocks
    writing to the other while that one writes too."""

    def __init__(self, context, load_args: tuple):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=worker_main, args=(child, *load_args), daemon=True)
        self.process.start()
        child.close()
        self.ready = False
        self.sent: deque[Batch] = deque()
        self.deadline = 0.0  # when the batch it is working on times out

    def send(self, batches: list[Batch], timeout: float) -> None:
        self.sent.extend(batches)
        self.deadline = time.monotonic() + timeout
        self.conn.send([batch.instances for batch in batches])

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()


class LoadFailed(Exception):
    pass


Finished = list[tuple[Batch, "list | None", "str | None"]]


class Pool:
    """``size`` workers; a killed or dead one is replaced by a fresh process loading the model again."""

    def __init__(self, size: int, load_args: tuple, timeout: float):
        self.context = multiprocessing.get_context("spawn")
        self.load_args, self.timeout = load_args, timeout
        self.workers = [Worker(self.context, load_args) for _ in range(size)]
        self.first_ready: float | None = None  # when the model was first loaded (monotonic)

    def busy(self) -> bool:
        return any(w.sent for w in self.workers)

    def idle(self) -> list[Worker]:
        return [w for w in self.workers if w.ready and not w.sent]

    def step(self, until: float | None, block: bool = True) -> tuple[Finished, list[Batch]]:
        """Wait for answers (at most until ``until`` or a batch's deadline; not at all unless ``block``), enforce
        timeouts and replace dead workers.  Returns the batches finished, with their predictions or error, and
        those a replaced worker had not started (to be sent again)."""
        now = time.monotonic()
        deadlines = [w.deadline for w in self.workers if w.sent] + ([until] if until else [])
        timeout = (max(0.0, min(deadlines) - now) if deadlines else None) if block else 0
        wait([w.conn for w in self.workers] + [w.process.sentinel for w in self.workers], timeout)
        finished: Finished = []
        returned: list[Batch] = []
        for worker in list(self.workers):
            try:
                while worker.conn.poll():
                    self.receive(worker, worker.conn.recv(), finished)
            except (EOFError, OSError):
                pass
            if not worker.process.is_alive():
                code = worker.process.exitcode
                if not worker.ready:
                    raise LoadFailed(f"a model worker exited with status {code} while loading the model")
                self.replace(worker, f"the model worker died (exit status {code})", finished, returned)
            elif worker.sent and time.monotonic() >= worker.deadline:
                self.replace(worker, f"timeout after {self.timeout:g}s", finished, returned)
        return finished, returned

    def receive(self, worker: Worker, message: tuple, finished: Finished) -> None:
        kind = message[0]
        if kind == "load-error":
            raise LoadFailed(message[1])
        if kind == "ready":
            worker.ready = True
            self.first_ready = self.first_ready or time.monotonic()
            return
        batch = worker.sent.popleft()
        worker.deadline = time.monotonic() + self.timeout  # the next batch starts now
        finished.append((batch, message[1], None) if kind == "result" else (batch, None, message[1]))

    def replace(self, worker: Worker, reason: str, finished: Finished, returned: list[Batch]) -> None:
        if worker.sent:
            finished.append((worker.sent.popleft(), None, reason))
            returned.extend(worker.sent)
        worker.kill()
        self.workers[self.workers.index(worker)] = Worker(self.context, self.load_args)

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    until = started + args.max_seconds if args.max_seconds else None
    if not args.input.is_dir():
        print(f"batch_infer: the input {args.input} is not a folder", file=sys.stderr)
        return EXIT_NO_INPUT
    files = find_files(args.input, args.include, args.exclude, skip=args.output)
    if not files:
        print(f"batch_infer: no file under {args.input} matches --include {' '.join(args.include)}"
              + (f" and not --exclude {' '.join(args.exclude)}" if args.exclude else ""), file=sys.stderr)
        return EXIT_NO_INPUT
    args.output.mkdir(parents=True, exist_ok=True)
    chunk = min(CHUNK_BATCHES, max(1, CHUNK_RECORDS // args.batch_size))
    feed = Feed(args.input, files, args.input_type, args.batch_size, args.output,
                read_ahead=max(READ_AHEAD, 2 * chunk * args.batch_size * args.workers))
    pool = Pool(args.workers, (args.model_dir, args.framework, args.fmt, args.name), args.timeout)
    timed_out = False
    finished: Finished = []
    try:
        while True:
            # Idle workers get their next batches first; the main process records answers, writes result files
            # and reads ahead while they predict.
            for worker in pool.idle():
                batches = feed.next_batches(feed.share(chunk, args.workers))
                if not batches:
                    break
                worker.send(batches, args.timeout)
            for batch, predictions, error in finished:
                batch.answer(predictions, error)
            feed.finish()
            if feed.exhausted and not pool.busy():
                break
            if until and time.monotonic() >= until:
                timed_out = True
                break
            finished, returned = pool.step(until, block=not feed.read_next())
            feed.give_back(returned)
    except LoadFailed as e:
        print(f"batch_infer: cannot load model {args.name!r}: {e}", file=sys.stderr, flush=True)
        return EXIT_LOAD_FAILED
    finally:
        pool.close()
    load_seconds = pool.first_ready - started if pool.first_ready else None
    write_summary(args, feed, len(files), time.monotonic() - started, load_seconds, timed_out)
    return EXIT_TIMED_OUT if timed_out else EXIT_OK


def write_summary(args: argparse.Namespace, feed: Feed, matched: int, seconds: float, load_seconds: float | None,
                  timed_out: bool) -> None:
    summary = {
        "model": args.name, "input_type": args.input_type, "batch_size": args.batch_size, "workers": args.workers,
        "files": len(feed.done), "files_matched": matched, "records": feed.records, "errors": feed.errors,
        "seconds": round(seconds, 3), "load_seconds": None if load_seconds is None else round(load_seconds, 3),
        "records_per_second": round(feed.records / seconds, 1) if seconds else 0.0,
        "timed_out": timed_out, "per_file": dict(sorted(feed.done.items())),
    }
    write_atomically(args.output / SUMMARY, json.dumps(summary, indent=1) + "\n")
    print(f"batch_infer: {summary['files']} of {matched} files, {feed.records} records ({feed.errors} errors) "
          f"in {seconds:.1f}s" + (f": stopped at --max-seconds {args.max_seconds:g}" if timed_out else ""),
          flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # so the workers are killed too
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
