"""What the cluster scripts share (exchange_api.py, operator_surface.py, handover.py, punishment.py): failing with a
message, HTTP with only the standard library, waiting for a condition, a `cas local --serve` cluster held up for the
script and stopped by its stop file, reading a node's status and key, and paying through a node's API.
"""

import json
import os
import re
import subprocess
import sys
import threading
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


def sign_tx(cas, work, name, key_file, inputs, outputs, fee, chain_id=1, extra=(), command=("tx",)):
    """Signs a transaction with `cas tx` (or another builder, e.g. `cas token issue`) into WORK/NAME.bin; returns
    (tx id, its bytes)."""
    out = os.path.join(work, f"{name}.bin")
    args = [cas, *command, "--key", key_file, "--chain-id", str(chain_id), "--fee", str(fee), "--out", out, *extra]
    for i in inputs:
        args += ["--input", i]
    for o in outputs:
        args += ["--output", o]
    tx_id = subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip().split()[0]
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


def status_of(folder, index):
    """Node `index`'s status.json in the cluster `folder`."""
    return json.load(open(os.path.join(folder, f"node{index}", "status.json")))


def role_of(folder, index):
    return status_of(folder, index)["consensus"].get("role", "member")


def node_key(cas, folder, index):
    """A node's public key, as `cas config check` prints it."""
    path = os.path.join(folder, f"node{index}.toml")
    printed = subprocess.run([cas, "config", "check", path], check=True, capture_output=True, text=True).stdout
    return re.search(r"key ([0-9a-f]{64})", printed).group(1)


def coin_of(api, owner):
    """The owner's largest spendable CAS coin through `api`: ("tx:index", amount)."""
    status, utxos = http("GET", f"{api}/v1/accounts/{owner}/utxos")
    check(status == 200, f"utxos of {owner}: {status} {utxos}")
    plain = [u for u in utxos["utxos"] if u["asset"] == "00" * 32 and not u.get("unlock_height")]
    check(len(plain) >= 1, f"no spendable coin of {owner}: {utxos}")
    u = max(plain, key=lambda u: int(u["amount"]))
    return f"{u['tx']}:{u['index']}", int(u["amount"])


def final(api, body, what):
    """Submits a signed transaction and waits until it is final and accepted."""
    status, answer = http("POST", f"{api}/v1/tx?wait=final&timeout_ms=30000", body)
    check(status == 200 and answer.get("status") == "final" and answer.get("rejection") is None,
          f"{what}: {status} {answer}")
    return answer


class Payer(threading.Thread):
    """Pays an account to itself through `api`, one transfer after another, until told to stop; `finals` holds
    (tx id, height) of each final payment, `failures` what went wrong."""

    def __init__(self, cas, work, name, account, api, fee):
        super().__init__(daemon=True)
        self.cas, self.work, self.fee = cas, work, fee
        self.name_, self.account, self.api = name, account, api
        self.done, self.failures, self.stopping = 0, [], False
        self.finals = []

    def run(self):
        n = 0
        while not self.stopping:
            try:
                coin, amount = coin_of(self.api, self.account["owner"])
                tx_id, tx = sign_tx(self.cas, self.work, f"{self.name_}{n}", self.account["key_file"], [coin],
                                    [f"{self.account['owner']}:{amount - self.fee}"], self.fee)
                status, answer = http("POST", f"{self.api}/v1/tx?wait=final&timeout_ms=30000", tx)
                if status != 200 or answer.get("status") != "final" or answer.get("rejection") is not None:
                    self.failures.append((status, answer))
                else:
                    self.done += 1
                    self.finals.append((tx_id, answer["height"]))
            except Exception as error:  # noqa: BLE001 -- a failure is recorded and reported, not raised in a thread
                self.failures.append(("error", repr(error)))
            n += 1
            time.sleep(0.1)
