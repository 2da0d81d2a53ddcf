"""The notebook magics: ``%%nothing_train`` and friends.

Every magic checks its input before calling the service and reports a problem as
one line (IPython's UsageError), never as a traceback.
"""

from __future__ import annotations

import functools
import os
import shlex
import sys
from pathlib import Path

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, kwds, magic_arguments, parse_argstring
from IPython.display import display

from .client import NothingClient, NothingError
from .failure import explain
from .options import (DESCRIPTION, OptionError, cell_run_name, check_syntax, parse_run_args, run_options,
                      spec_from_options)
from .run import RunHandle
from .snapshot import CELL_ENTRY_POINT, SnapshotTooLarge, build_snapshot
from .tuning import TUNE_DESCRIPTION, tune_options
from .widget import gpu_text, status_line

DEFAULT_MAX_SNAPSHOT_BYTES = 100 * 1024**2


def _usage(fn):
    """Turn the errors a person can fix into one-line UsageErrors (keeping the magic's parser and help)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (OptionError, NothingError, SnapshotTooLarge, FileNotFoundError, TimeoutError) as e:
            raise UsageError(str(e)) from None

    return wrapper


def _exact_options(fn):
    """``--gpu`` is not ``--gpus``: a magic's options are never abbreviated (as ``nothing submit``'s)."""
    fn.parser.allow_abbrev = False
    return fn


def _run_id(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise OptionError(f"expected a run id (a number), not {text.strip()!r}") from None


@magics_class
class NothingMagics(Magics):
    _client: NothingClient | None = None

    @property
    def client(self) -> NothingClient:
        if self._client is None:
            self._client = NothingClient()
        return self._client

    def _show(self, handle: RunHandle) -> None:
        if getattr(self.shell, "kernel", None) is not None:
            try:
                widget = handle.widget()
            except ImportError:
                pass
            else:
                widget.attach(display(widget, display_id=True))
                return
        print(status_line(handle.record))

    def _cell_number(self) -> int | None:
        """The running cell's ``In [n]``: the last input stored (``execution_count`` is already the next one)."""
        history = getattr(self.shell, "history_manager", None)
        stored = len(history.input_hist_raw) - 1 if history is not None else 0
        return stored if stored > 0 else None

    def _notebook(self) -> str | None:
        """The notebook's path, where the kernel knows it (recent ipykernel: ``__session__``; the server's env)."""
        session = self.shell.user_ns.get("__session__")
        return session if isinstance(session, str) and session else os.environ.get("JPY_SESSION_NAME") or None

    @line_cell_magic
    @_usage
    @_exact_options
    @magic_arguments()
    @kwds(usage="nothing_train SCRIPT [options] [-- script arguments]", description=DESCRIPTION,
          epilog="As a cell magic, %%nothing_train [options] [-- arguments] sends the cell as the code.")
    @run_options(with_script=True)
    def nothing_train(self, line: str, cell: str | None = None):
        """Queue a training run on the shared GPUs."""
        if line.strip() in ("-h", "--help"):
            print(self.nothing_train.parser.format_help())
            return
        prog = "%%nothing_train" if cell is not None else "%nothing_train"
        ns = parse_run_args(self.nothing_train.parser, shlex.split(line), prog=prog)
        if cell is not None and ns.script:
            raise OptionError(f"%%nothing_train: unknown option {ns.script}; the cell is the code: arguments for it "
                              f"go after --, e.g. %%nothing_train [options] -- {ns.script}")
        cwd = Path.cwd()
        if cell is None and not ns.script and ns.template:  # the template's code and entry point
            handle = RunHandle(self.client.submit(spec_from_options(ns, "", ns.script_args), b""), self.client)
            self.shell.user_ns["nothing_last_run"] = handle
            self._show(handle)
            return
        if cell is None:
            if not ns.script:
                raise OptionError("%nothing_train needs a script (e.g. %nothing_train train.py --gpus 1 -- "
                                  "--epochs 3), or use the cell form %%nothing_train")
            script = (cwd / ns.script).resolve()
            if not script.is_file() or not script.is_relative_to(cwd.resolve()):
                raise OptionError(f"{ns.script} is not a file in the notebook's folder {cwd}")
            if script.suffix == ".py":
                check_syntax(script.read_text(errors="replace"), ns.script, ns.script)
            entry, args, code = script.relative_to(cwd.resolve()).as_posix(), ns.script_args, None
        else:
            if not cell.strip():
                raise OptionError("the cell is empty: put the training code below %%nothing_train")
            check_syntax(cell, CELL_ENTRY_POINT, "the cell")
            entry, args, code = CELL_ENTRY_POINT, ns.script_args, cell
            if not ns.name:
                ns.name = cell_run_name(self._notebook(), self._cell_number(), ns.experiment)
        spec = spec_from_options(ns, entry, args)
        max_bytes = int(os.environ.get("NOTHING_MAX_SNAPSHOT_BYTES", DEFAULT_MAX_SNAPSHOT_BYTES))
        archive, skipped = build_snapshot(cwd, max_bytes, cell_code=code)
        if skipped:
            print(f"nothing: left out links pointing outside the folder: {', '.join(skipped[:5])}", file=sys.stderr)
        handle = RunHandle(self.client.submit(spec, archive), self.client)
        self.shell.user_ns["nothing_last_run"] = handle
        self._show(handle)

    @line_cell_magic
    @_usage
    @_exact_options
    @magic_arguments()
    @kwds(usage="nothing_tune SCRIPT --param NAME:TYPE:SPEC [options] [-- script arguments]",
          description=TUNE_DESCRIPTION,
          epilog="As a cell magic, %%nothing_tune [options] [-- arguments] tunes the cell. See docs/tuning.md.")
    @tune_options
    @run_options(with_script=True)
    def nothing_tune(self, line: str, cell: str | None = None):
        """Tune hyperparameters with Optuna; every trial is a run on the shared GPUs."""
        from .tuning import status_text, tuning_from_options

        if line.strip() in ("-h", "--help"):
            print(self.nothing_tune.parser.format_help())
            return
        prog = "%%nothing_tune" if cell is not None else "%nothing_tune"
        ns = parse_run_args(self.nothing_tune.parser, shlex.split(line), prog=prog)
        if cell is None and not ns.script and ns.template:  # the template's code and entry point
            spec, archive = tuning_from_options(ns, "", ns.script_args), b""
        else:
            entry, args, code = self._code(ns, cell, prog)
            spec = tuning_from_options(ns, entry, args)
            max_bytes = int(os.environ.get("NOTHING_MAX_SNAPSHOT_BYTES", DEFAULT_MAX_SNAPSHOT_BYTES))
            archive, _ = build_snapshot(Path.cwd(), max_bytes, cell_code=code)
        tuning = self.client.submit_tuning(spec, archive)
        self.shell.user_ns["nothing_last_tuning"] = tuning
        print(status_text(tuning))

    def _code(self, ns, cell: str | None, prog: str) -> tuple[str, list[str], str | None]:
        """The entry point, its arguments and the cell's code (None for a script), checked before any upload."""
        if cell is not None and ns.script:
            raise OptionError(f"{prog}: unknown option {ns.script}; the cell is the code: arguments for it go after --")
        cwd = Path.cwd().resolve()
        if cell is None:
            if not ns.script:
                raise OptionError(f"{prog} needs a script (e.g. {prog} train.py ...), or use the cell form %{prog}")
            script = (cwd / ns.script).resolve()
            if not script.is_file() or not script.is_relative_to(cwd):
                raise OptionError(f"{ns.script} is not a file in the notebook's folder {cwd}")
            if script.suffix == ".py":
                check_syntax(script.read_text(errors="replace"), ns.script, ns.script)
            return script.relative_to(cwd).as_posix(), ns.script_args, None
        if not cell.strip():
            raise OptionError(f"the cell is empty: put the training code below {prog}")
        check_syntax(cell, CELL_ENTRY_POINT, "the cell")
        return CELL_ENTRY_POINT, ns.script_args, cell

    @line_magic
    @_usage
    @magic_arguments()
    @argument("--all", action="store_true", help="everyone's runs (admins; others see names per the site's rule)")
    @argument("--state", action="append", default=[], help="only runs in this state, repeatable, e.g. QUEUED")
    def nothing_runs(self, line: str = ""):
        """List your runs, newest first, with their state, GPUs and why they wait or failed."""
        ns = parse_argstring(self.nothing_runs, line)
        runs = self.client.runs(everyone=ns.all, states=ns.state)
        if not runs:
            print("no runs")
            return
        print(f"{'ID':>5}  {'STATE':<18} {'GPUS':<12} {'OWNER':<12} {'NAME':<24} REASON")
        for r in runs:
            r = explain(self.client, r)
            name = r["name"] or r["entry_point"]
            print(f"{r['id']:>5}  {r['state']:<18} {gpu_text(r):<12} {r['owner'][:12]:<12} {name[:24]:<24} "
                  f"{r['reason']}")

    @line_magic
    @_usage
    @magic_arguments()
    @argument("run", help="the run's id")
    @argument("--follow", "-f", action="store_true", help="keep printing as the run writes, until it ends")
    @argument("--tail", type=int, default=None, help="only the last N lines")
    def nothing_logs(self, line: str):
        """Show a run's log (stdout and stderr together)."""
        ns = parse_argstring(self.nothing_logs, line)
        run_id = _run_id(ns.run)
        if ns.follow:
            for chunk in self.client.follow_logs(run_id):
                print(chunk, end="", flush=True)
        else:
            print(self.client.logs(run_id, tail=ns.tail)[0], end="")

    @line_magic
    @_usage
    @magic_arguments()
    @argument("run", help="the run's id")
    def nothing_cancel(self, line: str):
        """Cancel a queued or running run (SIGTERM, then SIGKILL after the grace period)."""
        run = self.client.cancel(_run_id(parse_argstring(self.nothing_cancel, line).run))
        print(status_line(run))

    @line_magic
    @_usage
    @magic_arguments()
    @argument("run", help="the run's id")
    @argument("path", nargs="?", default=None, help="one file or folder of its outputs, e.g. model/file.pt")
    def nothing_download(self, line: str):
        """Download a run's outputs into the notebook's folder (all of them into run-N/, or PATH)."""
        ns = parse_argstring(self.nothing_download, line)
        run_id, path = _run_id(ns.run), ns.path
        dest = Path.cwd() if path else Path.cwd() / f"run-{run_id}"
        written = self.client.download(run_id, dest, path)
        if not written:
            print(f"run {run_id} has no outputs")
        for f in written:
            print(f.relative_to(Path.cwd()) if f.is_relative_to(Path.cwd()) else f)

    @line_magic
    @_usage
    @magic_arguments()
    @argument("action", choices=["push", "ls", "show", "rm"], help="push NAME PATH, ls, show NAME[:VERSION], "
              "rm NAME[:VERSION]")
    @argument("name", nargs="?", default=None, help="the dataset: NAME, NAME:VERSION or GROUP/NAME[:VERSION]")
    @argument("path", nargs="?", default=None, help="push: the file or folder to upload as the next version")
    @argument("--group", default=None, help="push: the group that owns a new dataset")
    @argument("--description", default="", help="push: what a new dataset holds")
    def nothing_dataset(self, line: str):
        """Datasets: push a file or folder as a new version (unchanged files are not sent again), list, show, rm.

        A run reads one with ``%%nothing_train --dataset train=NAME[:VERSION]`` at ``$EM_DATASET_TRAIN``.
        """
        from . import datasets

        ns = parse_argstring(self.nothing_dataset, line)
        if ns.action == "ls":
            print(datasets.listing(self.client.datasets()))
            return
        if not ns.name:
            raise OptionError(f"%nothing_dataset {ns.action} needs the dataset's name")
        if ns.action == "push":
            if not ns.path:
                raise OptionError("%nothing_dataset push NAME PATH: PATH is the file or folder to upload")
            print(datasets.push(self.client, ns.name, ns.path, group=ns.group, description=ns.description).summary())
        elif ns.action == "show":
            print(datasets.details(self.client, ns.name))
        else:
            print(datasets.remove(self.client, ns.name))

    # Models, endpoints, predictions and batch inference: the ``nothing`` command's own words in a cell.
    @line_magic
    @_usage
    def nothing_model(self, line: str):
        """``%nothing_model ls|show|create|edit|rm ...``: as ``nothing model`` (docs/models.md)."""
        return self._cli("model", line)

    @line_magic
    @_usage
    def nothing_endpoint(self, line: str):
        """``%nothing_endpoint ls|show|create|stage-create|set-default|stats|rm ...``: as ``nothing endpoint``."""
        return self._cli("endpoint", line)

    @line_magic
    @_usage
    def nothing_predict(self, line: str):
        """``%nothing_predict ENDPOINT request.json [--stage S]``: call an endpoint through the platform."""
        return self._cli("predict", line)

    @line_magic
    @_usage
    def nothing_batch(self, line: str):
        """``%nothing_batch ls|create|show|stop|copy|rm|results ...``: as ``nothing batch``."""
        return self._cli("batch", line)

    def _cli(self, command: str, line: str) -> None:
        import shlex

        from .cli import main

        try:
            code = main([command, *shlex.split(line)])
        except SystemExit as e:  # argparse's usage errors: already printed
            code = e.code
        if code:
            raise OptionError(f"%nothing_{command} {line.strip()} failed (see above)")

    @line_magic
    @_usage
    @magic_arguments()
    @argument("run", help="the run's id")
    def nothing_watch(self, line: str):
        """Show the live widget of a run again (e.g. after reopening the notebook)."""
        handle = RunHandle(self.client.run(_run_id(parse_argstring(self.nothing_watch, line).run)), self.client)
        self._show(handle)
        return None
