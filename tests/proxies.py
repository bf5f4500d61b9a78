"""Private HAProxy and nginx instances for the tests, in front of one node.

Each runs in the foreground as a child process, on a free loopback port, with
everything it writes (pid, logs, temporary files) in its own temporary
directory, and is stopped by its pid. Their configuration is the shipped one
(``conf/haproxy.cfg``, ``conf/nginx-chateau.conf``) with only the listening
port and the nodes replaced, so the tests check what operators deploy.

Without the binaries the tests that use them are skipped, except under CI
where they fail (scripts/test installs haproxy and nginx-light).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.processes import end_process, free_port, listening, wait_ready

ROOT = Path(__file__).resolve().parent.parent


class ProxyError(RuntimeError):
    """The proxy did not start."""


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _binary(name: str, package: str) -> str:
    found = shutil.which(name) or (f"/usr/sbin/{name}" if os.access(f"/usr/sbin/{name}", os.X_OK) else None)
    if found is None:
        reason = f"{name} is not installed (apt-get install {package}); scripts/test installs it"
        if _in_ci():
            raise ProxyError(reason)
        pytest.skip(reason)
    return found


def _replace(text: str, pattern: str, replacement: str, count: int = 0) -> str:
    """Replace *pattern* (a regex, multi-line) in a shipped config; it must be there."""
    new, found = re.subn(pattern, replacement, text, count=count, flags=re.MULTILINE)
    if not found:
        raise AssertionError(f"the shipped config no longer has {pattern!r}")
    return new


class _Proxy:
    name = "proxy"

    def __init__(self, node_port: int) -> None:
        self.node_port = node_port
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix=f"chateau-{self.name}-"))
        self.log_path = self.root / "output.log"
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 20.0) -> "_Proxy":
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=self.root,
        )
        log.close()
        problem = wait_ready(self.process, listening(self.port), timeout, "listen")
        if problem is not None:
            output = self.output()
            self.stop()
            raise ProxyError(f"{self.name} {problem}:\n{output}")
        return self

    def output(self) -> str:
        texts = []
        for path in sorted(self.root.glob("*.log")):
            texts.append(f"--- {path.name}\n{path.read_text(errors='replace')}")
        return "\n".join(texts)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None:
            end_process(self.process, timeout=timeout)
            self.process = None
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "_Proxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class HAProxy(_Proxy):
    """``haproxy -db`` with conf/haproxy.cfg: PROXY protocol v2 to one node."""

    name = "haproxy"

    def __init__(self, node_port: int) -> None:
        self.binary = _binary("haproxy", "haproxy")
        super().__init__(node_port)
        self.config_path = self.root / "haproxy.cfg"
        text = (ROOT / "conf" / "haproxy.cfg").read_text()
        text = _replace(text, r"^(\s*)bind 0\.0\.0\.0:8888$", rf"\1bind 127.0.0.1:{self.port}")
        text = _replace(text, r"^\s*server node2 .*\n", "")
        text = _replace(text, r"^(\s*)server node1 .*$", rf"\1server node1 127.0.0.1:{node_port}")
        self.config_path.write_text(text)

    def command(self) -> list[str]:
        return [self.binary, "-db", "-f", str(self.config_path)]


class Nginx(_Proxy):
    """nginx with conf/nginx-chateau.conf in an http block of its own.

    ``-p``, ``-e`` and ``-g`` keep every file nginx writes in the temporary
    directory; as root (in CI) its workers run as root too, since they could
    not enter that directory as nobody.
    """

    name = "nginx"

    def __init__(self, node_port: int) -> None:
        self.binary = _binary("nginx", "nginx-light")
        super().__init__(node_port)
        site = (ROOT / "conf" / "nginx-chateau.conf").read_text()
        site = _replace(site, r"^(\s*)listen 8888;$", rf"\1listen 127.0.0.1:{self.port};")
        site = _replace(site, r"^\s*server 127\.0\.0\.1:8882 .*\n", "")
        site = _replace(site, r"^(\s*)server 127\.0\.0\.1:8881 ", rf"\1server 127.0.0.1:{node_port} ")
        (self.root / "chateau.conf").write_text(site)
        built = subprocess.run([self.binary, "-V"], capture_output=True, text=True).stderr
        temp = [f"client_body_temp_path {self.root}/body;", f"proxy_temp_path {self.root}/proxy;"]
        for module in ("fastcgi", "uwsgi", "scgi"):
            if f"--without-http_{module}_module" not in built:
                temp.append(f"{module}_temp_path {self.root}/{module};")
        user = "user root root;\n" if os.geteuid() == 0 else ""
        self.config_path = self.root / "nginx.conf"
        self.config_path.write_text(
            f"{user}worker_processes 1;\n"
            f"error_log {self.root}/error.log info;\n"
            "events { worker_connections 256; }\n"
            "http {\n"
            f"    access_log {self.root}/access.log;\n"
            + "".join(f"    {line}\n" for line in temp)
            + f"    include {self.root}/chateau.conf;\n"
            "}\n"
        )

    def command(self) -> list[str]:
        return [
            self.binary, "-p", str(self.root), "-c", str(self.config_path),
            "-e", str(self.root / "error.log"),
            "-g", f"daemon off; pid {self.root}/nginx.pid;",
        ]
