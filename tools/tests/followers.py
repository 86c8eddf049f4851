#!/usr/bin/env python3
"""Followers on a real cluster (issue 19, follower nodes): 4 members and 5 followers over the broadcast tree.

Usage: followers.py CAS_BINARY WORK_DIR

Starts `cas local --serve --followers 5`: followers 4..7 form the POS tier (each reads from one member), follower 8
reads from follower 4 (the third tier). Checks that every follower keeps up with the committee; that a transfer
submitted to the deepest follower is relayed up, becomes final there (its status, height and block the members'),
and has a settlement receipt on a follower that `cas receipt verify` accepts against the genesis alone; that a double
spend submitted to a follower is final and rejected in block order with its code, and a transaction for another
chain is refused at the member's admission with its code, relayed back; that the ledger stream a follower serves
starts with a certified block 1; that balances read on a follower equal the members'; that a follower's operator
endpoints say it is healthy and following; that a SIGKILLed follower catches up after its restart from what it
made durable; that a follower whose parent is SIGKILLed goes on from the next upstream; and, when the cluster stops, that all 9 nodes end with one commitment.
Exits non-zero with a message on the first thing that is not as it must be.
"""

import json
import os
import signal
import struct
import subprocess
import sys
import urllib.request

from harness import Cluster, check, http, http_text, sign_tx, wait_for

CAS, WORK = sys.argv[1], sys.argv[2]
FEE = 10


def sign(name, key_file, inputs, outputs, chain_id=1):
    return sign_tx(CAS, WORK, name, key_file, inputs, outputs, FEE, chain_id=chain_id)


def status_of(index):
    return json.load(open(os.path.join(WORK, "cluster", f"node{index}", "status.json")))


def height_of(api):
    # The newest block a node serves: its balance read says which height it reads at.
    return http("GET", f"{api}/v1/accounts/{'00' * 32}/balance")[1]["height"]


cluster_run = Cluster(CAS, os.path.join(WORK, "cluster"), extra=["--followers", "5"])
try:
    cluster = cluster_run.wait_ready()
    members = [n["api"] for n in cluster["nodes"]]
    followers = [f["api"] for f in cluster["followers"]]
    check(len(members) == 4 and len(followers) == 5, f"cluster.json: {cluster}")
    a, b = cluster["accounts"][:2]

    # 1. Every follower keeps up: within a few blocks of member 0, and says it is a follower.
    target = height_of(members[0])
    for i, api in enumerate(followers):
        wait_for(f"follower {i} at height {target}", lambda: height_of(api) >= target, 60)
        check(status_of(4 + i)["consensus"]["role"] == "follower", f"node {4 + i}'s status")
    print("followers at height", [height_of(api) for api in followers], "members at", height_of(members[0]))

    # 1b. A follower's operator endpoints: healthy, and its metrics say it follows.
    operator = cluster["followers"][4]["operator"]
    status, text = http_text("GET", f"{operator}/health")
    check(status == 200 and text.strip() == "ok", f"a follower's /health: {status} {text}")
    status, text = http_text("GET", f"{operator}/metrics")
    check(status == 200 and "cas_follower_connects_total" in text and "\ncas_height " in text,
          f"a follower's /metrics: {status} {text[:500]}")
    status, view = http("GET", f"{operator}/status")
    check(status == 200 and view["member"] is None and view["follower"]["role"] == "follower"
          and view["healthy"], f"a follower's /status: {status} {view}")

    # 2. The ledger stream a follower serves: frame 1 is block 1 with the committee's certificate.
    with urllib.request.urlopen(f"{followers[0]}/v1/ledger?from=1", timeout=30) as stream:
        header = stream.read(20)
        magic, height, block_len, cert_len = struct.unpack("<4sQII", header)
        check(magic == b"CASF" and height == 1 and block_len > 0 and cert_len > 0,
              f"the first frame: {magic} height {height} block {block_len} B certificate {cert_len} B")

    # 3. A transfer submitted to the deepest follower (tier 3) is relayed and becomes final there.
    status, utxos = http("GET", f"{followers[4]}/v1/accounts/{a['owner']}/utxos")
    check(status == 200 and len(utxos["utxos"]) == 1, f"utxos on a follower: {status} {utxos}")
    coin = f"{utxos['utxos'][0]['tx']}:{utxos['utxos'][0]['index']}"
    funds = int(utxos["utxos"][0]["amount"])
    pay_id, pay = sign("pay", a["key_file"], [coin], [f"{b['owner']}:700", f"{a['owner']}:{funds - 700 - FEE}"])
    status, answer = http("POST", f"{followers[4]}/v1/tx?wait=final&timeout_ms=30000", pay)
    check(status == 200 and answer.get("status") == "final" and answer["tx"] == pay_id and answer["rejection"] is None,
          f"a transfer through a follower: {status} {answer}")
    for api in members + followers:
        seen = wait_for(f"{pay_id} final on {api}",
                        lambda: (lambda r: r if r["status"] == "final" else None)(http("GET", f"{api}/v1/tx/{pay_id}")[1]),
                        30)
        check(seen["height"] == answer["height"] and seen["block"] == answer["block"], f"on {api}: {seen} vs {answer}")

    # 4. Its settlement receipt, from a follower, checked offline against the genesis.
    def receipt():
        status, body = http("GET", f"{followers[2]}/v1/tx/{pay_id}/receipt")
        return body if status == 200 else None

    body = wait_for("the transfer's receipt on a follower", receipt, 30)
    path = os.path.join(WORK, "pay.receipt.json")
    json.dump(body, open(path, "w"))
    checked = subprocess.run([CAS, "receipt", "verify", path, "--genesis", cluster["genesis"]],
                             capture_output=True, text=True)
    check(checked.returncode == 0 and "applied" in checked.stdout, f"the receipt: {checked.stdout} {checked.stderr}")

    # 5. Balances on a follower are the members'.
    def balance(api, owner, at):
        status, body = http("GET", f"{api}/v1/accounts/{owner}/balance?height={at}")
        check(status == 200, f"balance on {api}: {status} {body}")
        return body["balances"]

    at = answer["height"]
    for owner in (a["owner"], b["owner"]):
        check(balance(followers[1], owner, at) == balance(members[3], owner, at), f"the balance of {owner} at {at}")

    # 6. A double spend through a follower: final, rejected in block order with its code.
    double_id, double = sign("double", a["key_file"], [coin], [f"{b['owner']}:1", f"{a['owner']}:{funds - 1 - FEE}"])
    status, spent = http("POST", f"{followers[1]}/v1/tx?wait=final&timeout_ms=30000", double)
    check(status == 200 and spent["status"] == "final" and spent["rejection"] is not None
          and spent["rejection"]["code_name"] == "missing_input", f"a double spend through a follower: {status} {spent}")

    # 7. Another chain's transaction: refused by the member's admission, the refusal relayed with its code.
    status, utxos = http("GET", f"{followers[0]}/v1/accounts/{b['owner']}/utxos")
    coin_b = f"{utxos['utxos'][0]['tx']}:{utxos['utxos'][0]['index']}"
    _, other = sign("other-chain", b["key_file"], [coin_b], [f"{a['owner']}:1"], chain_id=2)
    status, refused = http("POST", f"{followers[0]}/v1/tx", other)
    check(status == 422 and refused.get("status") == "rejected" and refused.get("code_name") == "wrong_chain",
          f"another chain's transaction through a follower: {status} {refused}")

    # 7b. A follower SIGKILLed (a leaf, follower 8) comes back (restarted by `cas local --serve`) from what it had
    # made durable and catches up.
    victim = cluster["followers"][4]
    os.kill(victim["pid"], signal.SIGKILL)
    wait_for("follower 8 restarted", lambda: json.load(open(os.path.join(WORK, "cluster", "cluster.json")))
             ["followers"][4]["pid"] != victim["pid"], 30)
    target = height_of(members[1])
    wait_for("follower 8 caught up after its restart", lambda: height_of(followers[4]) >= target, 60)

    # 8. Follower 4 reads from its parent, member 0 (back to it within 10 s if it started on a fallback); member 0 is
    # SIGKILLed: the follower goes on from its next upstream.
    parent = members[0].removeprefix("http://")
    wait_for("follower 4 on its parent", lambda: status_of(4)["consensus"]["upstream"] == parent, 30)
    connects = status_of(4)["consensus"]["connects"]
    before = height_of(followers[0])
    os.kill(cluster["nodes"][0]["pid"], signal.SIGKILL)
    wait_for("follower 4 past the kill", lambda: height_of(followers[0]) >= before + 20, 60)
    wait_for("follower 4 reconnected", lambda: status_of(4)["consensus"]["connects"] > connects, 30)
    print("after its parent was killed, follower 4 went on from", status_of(4)["consensus"]["upstream"])
    for i, api in enumerate(followers):
        wait_for(f"follower {i} past the kill", lambda: height_of(api) >= before + 20, 60)
finally:
    output = cluster_run.stop()
check("every node at the same commitment" in output, "the nodes did not end at one commitment")
print("followers: all checks passed")
