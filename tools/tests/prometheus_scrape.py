#!/usr/bin/env python3
"""A real Prometheus server scrapes a 4-node cluster under load (issue 18).

Usage: prometheus_scrape.py CAS_BINARY WORK_DIR

Starts `cas local --serve` (4 nodes, each with its operator endpoints), checks each node's /metrics with
`promtool check metrics`, starts Prometheus (Debian's package: `prometheus` and `promtool` on PATH) scraping every
node once a second, drives load through the HTTP API with `cas load --api`, and asks Prometheus that committed
transactions and the height rose on every node, and that /health said ok. Prints SKIP and exits 0 when Prometheus
is not installed (.ci/run installs it). Exits non-zero with a message on the first thing that is not as it must be.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

CAS, WORK = sys.argv[1], sys.argv[2]
CLUSTER = os.path.join(WORK, "cluster")


def fail(message):
    print("FAIL:", message, file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read().decode()


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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if not shutil.which("prometheus") or not shutil.which("promtool"):
    print("SKIP: prometheus and promtool are not installed (Debian package `prometheus`; .ci/run installs it)")
    sys.exit(0)

server = subprocess.Popen(
    [CAS, "local", "--serve", "--nodes", "4", "--accounts", "400", "--dir", CLUSTER],
    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
prometheus = None
try:
    cluster = wait_for("cluster.json", lambda: json.load(open(os.path.join(CLUSTER, "cluster.json"))), 120)
    operators = [n["operator"] for n in cluster["nodes"]]
    targets = [urllib.parse.urlparse(o).netloc for o in operators]

    # Every node's exposition passes promtool's checks.
    for operator in operators:
        status, text = get(f"{operator}/metrics")
        check(status == 200 and "cas_committed_txs_total" in text, f"{operator}/metrics: {status}")
        lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        check(lint.returncode == 0, f"promtool check metrics on {operator}: {lint.stdout} {lint.stderr}")
    print("promtool check metrics: passed on", len(operators), "nodes")

    port = free_port()
    config = os.path.join(WORK, "prometheus.yml")
    with open(config, "w") as f:
        f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                "scrape_configs:\n  - job_name: cas\n    static_configs:\n"
                f"      - targets: {json.dumps(targets)}\n")
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={os.path.join(WORK, 'tsdb')}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def query(expression):
        url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        status, body = get(url)
        body = json.loads(body)
        check(body["status"] == "success", f"query {expression}: {body}")
        return {r["metric"].get("instance", "all"): float(r["value"][1]) for r in body["data"]["result"]}

    def on_every_node(expression):
        values = query(expression)
        return values if len(values) == len(targets) else None

    before_txs = wait_for("a first scrape of every node", lambda: on_every_node("cas_committed_txs_total"), 60)
    before_height = on_every_node("cas_height")
    check(before_height is not None, "cas_height is not scraped on every node")

    # Load through the HTTP API: 200 tx/s for 10 s, spread over the four nodes.
    apis = [urllib.parse.urlparse(n["api"]).netloc for n in cluster["nodes"]]
    load = [CAS, "load", "--genesis", cluster["genesis"], "--rate", "200", "--duration-s", "10",
            "--accounts", "400", "--workers", "8"]
    for api in apis:
        load += ["--api", api]
    ran = subprocess.run(load, capture_output=True, text=True, timeout=180)
    check(ran.returncode == 0, f"the load failed: {ran.stdout[-2000:]} {ran.stderr[-2000:]}")

    def risen():
        txs, height = on_every_node("cas_committed_txs_total"), on_every_node("cas_height")
        if not txs or not height:
            return None
        # Every node executes every transaction of the load (2,000 less the 1% it makes invalid, refused at
        # admission): wait until each node's count shows it.
        if all(txs[i] >= before_txs[i] + 1900 for i in txs) and all(height[i] > before_height[i] for i in height):
            return txs, height
        return None

    txs, height = wait_for("committed transactions and height to rise on every node in Prometheus", risen, 30)
    for instance in sorted(txs):
        print(f"{instance}: cas_committed_txs_total {before_txs[instance]:.0f} -> {txs[instance]:.0f}, "
              f"cas_height {before_height[instance]:.0f} -> {height[instance]:.0f}")
    healthy = on_every_node("cas_healthy")
    check(healthy and all(v == 1 for v in healthy.values()), f"cas_healthy: {healthy}")
    latency = query("histogram_quantile(0.5, sum(rate(cas_submit_to_final_seconds_bucket[30s])) by (le))")
    print("submit-to-final p50 over the last 30 s, from Prometheus:", latency)
finally:
    if prometheus:
        prometheus.terminate()
        prometheus.wait(timeout=30)
    open(os.path.join(CLUSTER, "stop"), "w").close() if os.path.isdir(CLUSTER) else None
    try:
        output, _ = server.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        output, _ = server.communicate()

check(server.returncode == 0, f"cas local --serve exited with {server.returncode}: {output[-3000:]}")
print("prometheus scrape: all checks passed")
