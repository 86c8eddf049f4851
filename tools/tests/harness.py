"""What the cluster scripts share (exchange_api.py, operator_surface.py): failing with a message, HTTP with only the
standard library, waiting for a condition, and a `cas local --serve` cluster held up for the script and stopped by
its stop file.
"""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request


def fail(message):
    print("FAIL:", message, file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def http_text(method, url, body=None, content_type="application/octet-stream", timeout=30):
    """Returns (status, body text), whatever the status."""
    request = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def http(method, url, body=None, content_type="application/octet-stream", timeout=30):
    """Returns (status, parsed JSON body)."""
    status, text = http_text(method, url, body, content_type, timeout)
    return status, json.loads(text)


def sign_tx(cas, work, name, key_file, inputs, outputs, fee, chain_id=1, extra=()):
    """Signs a transaction with `cas tx` into WORK/NAME.bin; returns (tx id, its bytes)."""
    out = os.path.join(work, f"{name}.bin")
    args = [cas, "tx", "--key", key_file, "--chain-id", str(chain_id), "--fee", str(fee), "--out", out, *extra]
    for i in inputs:
        args += ["--input", i]
    for o in outputs:
        args += ["--output", o]
    tx_id = subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip().split()[-1]
    return tx_id, open(out, "rb").read()


def wait_for(what, probe, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            value = probe()
            if value:
                return value
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    fail(f"timed out waiting for {what}")


class Cluster:
    """`cas local --serve` in `folder` until `stop()`: `info` is its cluster.json."""

    def __init__(self, cas, folder, nodes=4, accounts=8, extra=()):
        self.folder = folder
        self.server = subprocess.Popen(
            [cas, "local", "--serve", "--nodes", str(nodes), "--accounts", str(accounts), "--dir", folder, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.info = None

    def wait_ready(self):
        self.info = wait_for("cluster.json", lambda: json.load(open(os.path.join(self.folder, "cluster.json"))), 120)
        return self.info

    def stop(self):
        """Stops the cluster (its stop file) and returns its output; fails unless it exited cleanly."""
        if os.path.isdir(self.folder):
            open(os.path.join(self.folder, "stop"), "w").close()
        try:
            output, _ = self.server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.server.kill()
            output, _ = self.server.communicate()
        print(output)
        check(self.server.returncode == 0, f"cas local --serve exited with {self.server.returncode}")
        return output
