"""Where dataset files are sent: the address the service advertises for direct uploads, and hashing ahead.

No hub: the pure parts (which URL an upload names for each listener and setting; a
hash stopped when its push ends).  The live behaviour is in ``test_datasets_live.py``
(the direct listener refuses what the proxy refuses) and ``test_datasets_client.py``
(a push goes direct, and takes the proxy when the direct address does not answer).
"""

from __future__ import annotations

import threading

import pytest
from traitlets import TraitError

from nothing.magics.datasets import Stopped, sha256_of
from nothing.scheduler.datasets import Datasets


@pytest.mark.parametrize("listener, settings, advertised", [
    ("http://127.0.0.1:10101", {}, "http://127.0.0.1:10101/services/nothing/"),
    ("http://localhost:10101", {}, "http://localhost:10101/services/nothing/"),
    ("http://[::1]:10101", {}, "http://[::1]:10101/services/nothing/"),
    # On every interface: the service cannot know which address a notebook reaches; the admin says it.
    ("http://0.0.0.0:10101", {}, None),
    ("http://10.0.0.5:10101", {}, None),
    ("http://0.0.0.0:10101", {"upload_url": "http://10.0.0.5:10101/services/nothing/"},
     "http://10.0.0.5:10101/services/nothing/"),
    ("http://127.0.0.1:10101", {"direct_uploads": False}, None),
    ("http://127.0.0.1:10101", {"direct_uploads": False, "upload_url": "http://10.0.0.5:1/"}, None),
])
def test_an_upload_advertises_the_listener_notebooks_reach(tmp_path, listener, settings, advertised):
    datasets = Datasets(str(tmp_path), **settings)
    assert datasets.advertised_upload_url(listener, "/services/nothing/") == advertised


def test_a_direct_upload_address_must_be_a_web_url_and_ends_with_a_slash(tmp_path):
    assert Datasets(str(tmp_path), upload_url="https://up.example/services/nothing").upload_url == \
        "https://up.example/services/nothing/"
    with pytest.raises(TraitError, match="must be an http:// or https:// URL"):
        Datasets(str(tmp_path), upload_url="10.0.0.5:10101")


def test_hashing_ahead_stops_when_its_push_has_ended(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * (3 * 1024 * 1024))
    assert sha256_of(path) == sha256_of(path, threading.Event())
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped):
        sha256_of(path, stop)
