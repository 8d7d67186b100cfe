"""`lightserve serve` as a child process for the Python client tests (the twin of
daemon_process.h for the C++ ones): start it on free ports, wait for its ports file, stop it with
SIGTERM and require a clean exit."""
import json
import os
import signal
import subprocess
import tempfile
import time


class Daemon:
    """Starts `binary serve --model model` with `args`; `port(name)` is the port the daemon wrote
    for `name` ("http" or "grpc")."""

    def __init__(self, binary, model, args, start_timeout=120):
        self.tmp = tempfile.TemporaryDirectory()
        self.ports_file = os.path.join(self.tmp.name, "ports.json")
        self.stderr = open(os.path.join(self.tmp.name, "stderr.txt"), "w+")
        self.process = subprocess.Popen(
            [binary, "serve", "--model", model, "--ports-file", self.ports_file] + list(args),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr)
        self.ports = None
        deadline = time.time() + start_timeout
        while time.time() < deadline and self.ports is None:
            if self.process.poll() is not None:
                self.close()
                raise RuntimeError("lightserve serve exited: " + self.stderr_text())
            try:
                with open(self.ports_file) as f:
                    self.ports = json.load(f)
            except (OSError, ValueError):
                time.sleep(0.05)
        if self.ports is None:
            self.process.kill()
            self.process.wait()
            text = self.stderr_text()
            self.close()
            raise RuntimeError("no ports file within %d s: %s" % (start_timeout, text))

    def port(self, name):
        return self.ports[name]

    def stderr_text(self):
        self.stderr.flush()
        self.stderr.seek(0)
        return self.stderr.read()

    def stop(self):
        """SIGTERM, then the exit code must be 0 (a drain that crashes fails the test)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                code = self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                code = self.process.wait()
            text = self.stderr_text()
            self.close()
            assert code == 0, "lightserve serve exited %d: %s" % (code, text)
        self.close()

    def close(self):
        if not self.stderr.closed:
            self.stderr.close()
        self.tmp.cleanup()
