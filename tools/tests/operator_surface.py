#!/usr/bin/env python3
"""The operator's surface on a 4-node cluster (issue 18): /health, /status, /metrics and a real Prometheus.

Usage: operator_surface.py CAS_BINARY WORK_DIR

Starts `cas local --serve` (4 nodes, each with its operator endpoints) and waits for /health to say ok on every
node; reads /status; checks each node's /metrics with `promtool check metrics`; starts Prometheus (Debian's package)
scraping every node once a second, drives load through the HTTP API with `cas load --api`, and asks Prometheus that
committed transactions and the height rose on every node; then SIGKILLs a node and follows its /health as the
cluster restarts it: down, 503 catching up, 200 ok. The Prometheus part says SKIP where `prometheus` and `promtool`
are not installed (.ci/run installs them). Exits non-zero with a message on the first thing that is not as it must
be.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse

from harness import Cluster, check, fail, http_text, wait_for

CAS, WORK = sys.argv[1], sys.argv[2]
CLUSTER = os.path.join(WORK, "cluster")


def get(url, timeout=10):
    return http_text("GET", url, timeout=timeout)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HAS_PROMETHEUS = bool(shutil.which("prometheus") and shutil.which("promtool"))

# The nodes log at info, one JSON object per line: checked at the end.
os.environ["CAS_LOG"] = "info"
os.environ["CAS_LOG_FORMAT"] = "json"
cluster_run = Cluster(CAS, CLUSTER, accounts=400)
prometheus = None
try:
    cluster = cluster_run.wait_ready()
    operators = [n["operator"] for n in cluster["nodes"]]
    targets = [urllib.parse.urlparse(o).netloc for o in operators]

    # Every node says it is in sync, and its status agrees.
    for operator in operators:
        wait_for(f"{operator}/health ok", lambda: get(f"{operator}/health") == (200, "ok\n"), 60)
        status, body = get(f"{operator}/status")
        body = json.loads(body)
        check(status == 200 and body["healthy"] and not body["catching_up"] and body["chain_id"] == cluster["chain_id"]
              and len(body["committee"]) == 4 and sum(p["connected"] for p in body["peers"]) == 3,
              f"{operator}/status: {status} {body}")
    print("/health ok and /status in sync on", len(operators), "nodes")
    if not HAS_PROMETHEUS:
        print("SKIP: the Prometheus part: prometheus and promtool are not installed (Debian package `prometheus`)")

    if HAS_PROMETHEUS:
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
        for file in ["ledger", "index", "journal"]:
            synced = on_every_node(f'cas_fsync_seconds_count{{file="{file}"}}')
            check(synced and all(v > 0 for v in synced.values()), f"{file} fdatasyncs seen: {synced}")
        print("ledger fdatasync p99 over the last 30 s, from Prometheus:", query(
            'histogram_quantile(0.99, sum(rate(cas_fsync_seconds_bucket{file="ledger"}[30s])) by (le))'))
        # Signature work and its batches, the protocol version, the catch-up and HTTP API gauges, on every node.
        for name, expected in [("cas_admission_signature_batches_total", lambda v: v > 0),
                               ("cas_package_signature_batches_total", lambda v: v > 0),
                               ("cas_protocol_version", lambda v: v == 1),
                               ("cas_protocol_version_max", lambda v: v >= 2),
                               ("cas_catch_up_chunks", lambda v: v == 0),
                               ("cas_api_query_queue", lambda v: v >= 0),
                               ("cas_api_waiting_requests", lambda v: v >= 0)]:
            values = on_every_node(name)
            check(values and all(expected(v) for v in values.values()), f"{name}: {values}")
        batch = query("sum(cas_admission_signatures_checked_total) / sum(cas_admission_signature_batches_total)")
        print("admission's mean signature batch, from Prometheus:", batch)
        healthy = on_every_node("cas_healthy")
        check(healthy and all(v == 1 for v in healthy.values()), f"cas_healthy: {healthy}")
        latency = query("histogram_quantile(0.5, sum(rate(cas_submit_to_final_seconds_bucket[30s])) by (le))")
        print("submit-to-final p50 over the last 30 s, from Prometheus:", latency)

    # /health through a restart: SIGKILL node 3; the cluster restarts it; its /health goes from down to 503
    # (catching up: it has not heard the committee yet) to 200 ok.
    victim = cluster["nodes"][3]
    os.kill(victim["pid"], signal.SIGKILL)
    seen, started = [], time.time()
    while time.time() - started < 60:
        try:
            answer = get(f"{victim['operator']}/health", timeout=2)
            answer = (answer[0], answer[1].strip())
        except OSError:
            answer = ("down", "")
        if not seen or seen[-1][1] != answer:
            seen.append((round(time.time() - started, 2), answer))
        if answer[0] == 200 and any(a[0] == 503 for _, a in seen):
            break
        time.sleep(0.05)
    print("node 3's /health after SIGKILL:", seen)
    codes = [a[0] for _, a in seen]
    check(codes[0] == "down" and 503 in codes and codes[-1] == 200 and codes.index(503) < len(codes) - 1,
          f"/health transitions: {seen}")
    reason = next(a[1] for _, a in seen if a[0] == 503)
    check(reason.startswith("catching up") or "reported" in reason, f"the 503's reason: {reason}")
    # The logs: every line of every node's log is a JSON event; at info, one line per event (start, peers,
    # snapshots), so far fewer lines than the load's 2,000 transactions.
    for i in range(4):
        with open(os.path.join(CLUSTER, f"node{i}.log")) as f:
            lines = [line for line in f if line.strip()]
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                fail(f"node{i}.log: not a JSON line: {line[:200]}")
        check(all("level" in e and "message" in e and "timestamp" in e for e in events),
              f"node{i}.log: an event without level, message or timestamp")
        info = [e for e in events if e["level"] == "INFO"]
        check(any(e["message"] == "netio started" for e in info) and len(info) < 200,
              f"node{i}.log: {len(info)} info events")
    print("node logs: JSON lines, info events per node:", len(info))
finally:
    if prometheus:
        prometheus.terminate()
        prometheus.wait(timeout=30)
    cluster_run.stop()

print("operator surface: all checks passed")
