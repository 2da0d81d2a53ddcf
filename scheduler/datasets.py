"""Datasets as runs see them: settings, resolving ``--dataset train=mnist:2`` and mounting the versions.

A run names up to ``max_per_run`` datasets, each under a name of its own
(``train``); the submission is resolved here to exact versions, which the run
record keeps.  At start each version is bound read-only into the run's own
mount namespace at ``<data>/mounts/<run>/datasets/<name>`` (no copy: the time to
start does not depend on the dataset's size), and the run finds it in
``EM_DATASET_<NAME>`` with all of them in ``EM_DATASETS`` (the seed's appendix 4).
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from urllib.parse import urlparse

from traitlets import Bool, Integer, List, TraitError, Unicode, validate
from traitlets.config import LoggingConfigurable

from .dataset_files import DatasetFiles
from .ownership import Principal, may

ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")
_REF = re.compile(r"(?:(?P<group>[A-Za-z0-9][A-Za-z0-9_.\-]{0,99})/)?(?P<name>[A-Za-z0-9][A-Za-z0-9_.\-]{0,99})"
                  r"(?::(?P<version>[0-9]{1,9}))?")


class DatasetRefError(ValueError):
    """A ``--dataset`` that cannot be used; the message says why."""


def parse_refs(raw) -> list[tuple[str, str | None, str, int | None]]:
    """``{"train": "mnist:2", "val": "vision/mnist"}`` or ``["train=mnist:2"]`` →
    ``[(name, group or None, dataset, version or None)]``."""
    if raw in (None, {}, []):
        return []
    if isinstance(raw, list):
        pairs = []
        for item in raw:
            if not isinstance(item, str) or "=" not in item:
                raise DatasetRefError(f"datasets must be NAME=DATASET[:VERSION] entries, not {str(item)[:60]!r}")
            pairs.append(tuple(item.split("=", 1)))
    elif isinstance(raw, dict):
        pairs = list(raw.items())
    else:
        raise DatasetRefError("datasets must be an object of name: DATASET[:VERSION]")
    out, seen = [], set()
    for alias, ref in pairs:
        if not isinstance(alias, str) or not ALIAS.fullmatch(alias):
            raise DatasetRefError(f"dataset name {str(alias)[:40]!r} must be a letter then letters, digits or _ "
                                  "(at most 32): it becomes EM_DATASET_<NAME>")
        if alias.upper() in seen:
            raise DatasetRefError(f"dataset name {alias!r} is given twice")
        seen.add(alias.upper())
        m = _REF.fullmatch(ref) if isinstance(ref, str) else None
        if not m:
            raise DatasetRefError(f"dataset {str(ref)[:80]!r} must be NAME, NAME:VERSION or GROUP/NAME[:VERSION]")
        out.append((alias, m.group("group"), m.group("name"), int(m.group("version")) if m.group("version")
                    else None))
    return out


def env_name(alias: str) -> str:
    return "EM_DATASET_" + alias.upper()


class Datasets(LoggingConfigurable):
    allowed_roots = List(
        Unicode(),
        help="""Server folders datasets may be registered from without a copy (e.g. an NFS mount). A path is
        allowed when it is under one of these once every link is resolved. Example:
        ``c.Datasets.allowed_roots = ["/mnt/nfs/datasets"]``""",
    ).tag(config=True)
    max_per_run = Integer(10, help="Datasets one run may name (EasyMaker allows 10).").tag(config=True)
    max_file_bytes = Integer(
        1024**4, help="Largest single file of an upload, in bytes (the disk is the real limit)."
    ).tag(config=True)
    store_dir = Unicode(help="Where datasets are stored (default: <data_dir>/datasets).").tag(config=True)
    direct_uploads = Bool(
        True,
        help="""Tell clients to send dataset files straight to this service's own listener rather than through
        the hub's proxy (configurable-http-proxy spends about as much CPU on a large file as this service). It is
        the same server, handlers, token check and access rules: only the hop is gone. The client uses it only when it
        answers there for the upload it opened, and takes the proxy otherwise. Example:
        ``c.Datasets.direct_uploads = False`` (every file through the proxy).""",
    ).tag(config=True)
    upload_url = Unicode(
        help="""Where notebooks reach this service's own listener for direct uploads: its URL with the service
        prefix. Default: the listener itself (``c.NothingScheduler.service_url`` and the prefix) when that is a
        loopback address, which notebooks on this host reach; none otherwise. For notebooks on other hosts
        (Kubernetes pods), the address they reach the service at, the service listening there (its
        ``service_url``), e.g. ``c.Datasets.upload_url = "http://10.0.0.5:10101/services/nothing/"``.""",
    ).tag(config=True)

    local_push = Bool(
        True,
        help="""Let clients on this host (the local spawner's notebooks, the CLI) hand dataset files over as open
        file descriptors on a Unix socket (``local_push_socket``) instead of sending their bytes over HTTP: the
        service reads, hashes and writes each file once, several times faster. The client opens the files itself,
        so it can pass only what its Unix account may read; each file needs a one-time ticket from the HTTP API,
        which makes PUT's checks (``docs/datasets.md``, "Local push"). Clients elsewhere, or when this is off,
        send over HTTP. Example: ``c.Datasets.local_push = False``""",
    ).tag(config=True)
    local_push_socket = Unicode(
        help="""The Unix socket of local pushes (mode 0666: the ticket authenticates, not the socket). Every
        folder above it must let the users' accounts through (missing ones are made 0711). Default:
        ``<data_dir>/sockets/dataset-push.sock`` (that folder 0711). At most 106 characters (a Unix socket's
        limit). Example: ``c.Datasets.local_push_socket = "/run/nothing/dataset-push.sock"``""",
    ).tag(config=True)

    @validate("local_push_socket")
    def _check_local_push_socket(self, proposal):
        path = proposal["value"]
        if path and (not path.startswith("/") or len(path.encode()) > 106):
            raise TraitError(f"c.Datasets.local_push_socket must be an absolute path of at most 106 bytes, not "
                             f"{path!r}")
        return path

    @validate("upload_url")
    def _check_upload_url(self, proposal):
        url = proposal["value"]
        if url and not url.startswith(("http://", "https://")):
            raise TraitError(f"c.Datasets.upload_url must be an http:// or https:// URL, not {url!r}")
        return url.rstrip("/") + "/" if url else url

    def __init__(self, data_dir: str, **kwargs):
        super().__init__(**kwargs)
        self.data_dir = data_dir
        self.files = DatasetFiles(self.store_dir or Path(data_dir) / "datasets")

    def local_push_socket_path(self) -> tuple[str, bool]:
        """Where the local push socket listens, and whether that is the default place (its folder is ours)."""
        if self.local_push_socket:
            return self.local_push_socket, False
        return str(Path(self.data_dir) / "sockets" / "dataset-push.sock"), True

    def advertised_upload_url(self, service_url: str, prefix: str) -> str | None:
        """The address clients are told to send files to directly (see ``direct_uploads``), or None."""
        if not self.direct_uploads:
            return None
        if self.upload_url:
            return self.upload_url
        listener = urlparse(service_url)
        try:
            loopback = listener.hostname == "localhost" or ipaddress.ip_address(listener.hostname or "").is_loopback
        except ValueError:
            loopback = False
        return f"{listener.scheme}://{listener.netloc}/{prefix.strip('/')}/" if loopback else None

    @staticmethod
    def visible(principal: Principal, row) -> bool:
        return may(principal, "see", row.owner, row.group)

    def describe_ref(self, row, version: int) -> str:
        return (f"{row.group}/" if row.group else "") + f"{row.name}:{version}"

    def version_path(self, row, version_row) -> str:
        """What a run reads: the stored tree, or the registered server folder."""
        return version_row.source_path or str(self.files.tree(row.id, version_row.version))
