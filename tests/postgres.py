"""A throwaway PostgreSQL server (Debian's package) for the tests, run as the postgres user on loopback."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time

from .hub import free_port


class Postgres:
    def __init__(self):
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            raise RuntimeError("PostgreSQL is not installed: scripts/test.sh installs Debian's postgresql package")
        self.bin = os.path.dirname(bins[-1])
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="nothing-pg-")
        shutil.chown(self.dir, "postgres", "postgres")
        self.data = os.path.join(self.dir, "data")

    def _as_postgres(self, *cmd: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(prefix + list(cmd), check=True, capture_output=True)

    def start(self) -> str:
        self._as_postgres(f"{self.bin}/initdb", "-D", self.data, "-A", "trust", "-U", "postgres")
        self._as_postgres(f"{self.bin}/pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "log"), "-w", "start",
                          "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off")
        deadline = time.monotonic() + 30
        while True:
            try:
                self._as_postgres(f"{self.bin}/createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                                  "nothing")
                break
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/nothing"

    def stop(self) -> None:
        try:
            self._as_postgres(f"{self.bin}/pg_ctl", "-D", self.data, "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
