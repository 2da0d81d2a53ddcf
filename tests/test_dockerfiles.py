"""The image Dockerfiles, read with dockerfile-parse (no Docker daemon here; building needs one).

What can break without a build: a COPY of a file that is not in the repository, an
entrypoint that is not the script tests/test_entrypoints.py runs, a package folder
the image forgets, a server config naming a class that does not exist.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
from pathlib import Path

import pytest
import tomllib
from dockerfile_parse import DockerfileParser
from traitlets.utils.importstring import import_item

from nothing.spawner.kernels import CustomEnvKernelSpecManager

REPO = Path(__file__).resolve().parent.parent
KINDS = ["notebook", "training"]
TINI = ["/usr/bin/tini", "-g", "--"]


def instructions(kind: str, name: str, build_args: dict | None = None) -> list[dict]:
    parser = DockerfileParser(str(REPO / "images" / kind / "Dockerfile"), build_args=build_args or {})
    return [i for i in parser.structure if i["instruction"] == name]


def copies(kind: str) -> list[tuple[list[str], list[str], str]]:
    """(flags, sources, destination) of every COPY and ADD."""
    found = []
    for instruction in instructions(kind, "COPY") + instructions(kind, "ADD"):
        words = shlex.split(instruction["value"])
        flags = [w for w in words if w.startswith("--")]
        paths = [w for w in words if not w.startswith("--")]
        found.append((flags, paths[:-1], paths[-1]))
    return found


@pytest.mark.parametrize("kind", KINDS)
def test_every_copied_source_is_in_the_repository(kind):
    sources = [s for flags, srcs, _ in copies(kind) if not any(f.startswith("--from") for f in flags) for s in srcs]
    assert sources
    missing = [s for s in sources if not list(REPO.glob(s))]
    assert missing == []


@pytest.mark.parametrize("kind", KINDS)
def test_the_entrypoint_is_the_tested_script_under_tini(kind):
    script = f"images/{kind}/entrypoint.sh"
    [(flags, _, destination)] = [c for c in copies(kind) if c[1] == [script]]
    [entrypoint] = instructions(kind, "ENTRYPOINT")

    assert json.loads(entrypoint["value"]) == [*TINI, destination]
    assert "--chmod=0755" in flags
    assert os.access(REPO / script, os.X_OK), "the script runs directly in tests and on a host"


def test_the_notebook_image_starts_the_single_user_server_by_default():
    [cmd] = instructions("notebook", "CMD")
    assert json.loads(cmd["value"]) == ["jupyterhub-singleuser"]


@pytest.mark.parametrize("kind", KINDS)
def test_the_images_get_every_folder_the_package_is_built_from(kind):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    wheel = project["tool"]["hatch"]["build"]["targets"]["wheel"]
    needed = {"pyproject.toml", project["project"]["readme"], *wheel["only-include"], *wheel.get("shared-data", {}),
              *wheel.get("force-include", {}), *(hook["path"] for hook in wheel.get("hooks", {}).values())}
    copied = {s.rstrip("/") for _, srcs, _ in copies(kind) for s in srcs}
    missing = {n for n in needed if not any(n == c or n.startswith(c + "/") for c in copied)}
    assert missing == set()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("core, base", [("cpu", "ubuntu:22.04"),
                                        ("gpu", "nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04")])
def test_the_core_build_argument_picks_the_base_image(kind, core, base):
    parser = DockerfileParser(str(REPO / "images" / kind / "Dockerfile"), build_args={"CORE": core})
    assert parser.baseimage == f"base-{core}"
    stages = {i["value"].split(" AS ")[1]: i["value"].split(" AS ")[0] for i in instructions(kind, "FROM")
              if " AS " in i["value"]}
    assert stages[f"base-{core}"] == base


@pytest.mark.parametrize("kind", KINDS)
def test_the_dockerignore_keeps_every_copied_source(kind):
    patterns = [line for line in (REPO / "images" / kind / "Dockerfile.dockerignore").read_text().splitlines()
                if line and not line.startswith("#")]
    sources = {s for _, srcs, _ in copies(kind) for s in srcs}
    ignored = [(s, p) for s in sources for p in patterns
               if fnmatch.fnmatch(s, p) or fnmatch.fnmatch(s, p.removeprefix("**/"))]
    assert ignored == []


def test_the_notebook_server_config_runs_as_root_and_finds_custom_envs():
    [(_, _, destination)] = [c for c in copies("notebook") if c[1] == ["images/notebook/jupyter_server_config.json"]]
    config = json.loads((REPO / "images/notebook/jupyter_server_config.json").read_text())

    assert destination == "/etc/jupyter/jupyter_server_config.json"
    assert config["ServerApp"]["allow_root"] is True
    assert import_item(config["ServerApp"]["kernel_spec_manager_class"]) is CustomEnvKernelSpecManager
