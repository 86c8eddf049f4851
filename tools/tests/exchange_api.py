#!/usr/bin/env python3
"""An exchange's integration, driven through the HTTP API with nothing but Python's standard library.

Usage: exchange_api.py CAS_BINARY WORK_DIR

Starts `cas local --serve` (4 nodes), then as an exchange would: reads a balance and the outputs, signs transfers
offline with `cas tx`, submits one and waits for it to be final, submits it again (duplicate), submits garbage
(rejected with its code) and a double spend (final, rejected in block order with its code), asks the status on
another node, SIGKILLs the node it submitted to and asks again once the cluster has restarted it, reads the
receiver's balance, and follows the deposit stream, disconnecting and resuming from the last height: no gap, no
repeat; reads balances and outputs at past heights; fetches the deposit's and the double spend's settlement
receipts, checks them offline with `cas receipt verify` against the genesis alone, and checks that a receipt with
one byte changed fails. Exits non-zero with a message on the first thing that is not as it must be.
"""

import json
import os
import signal
import subprocess
import sys
import urllib.request

from harness import Cluster, check, http, wait_for

CAS, WORK = sys.argv[1], sys.argv[2]
CLUSTER = os.path.join(WORK, "cluster")


def sign(key_file, inputs, outputs, fee, out, memo=None, client_id=None):
    args = [CAS, "tx", "--key", key_file, "--chain-id", "1", "--fee", str(fee), "--out", out]
    for i in inputs:
        args += ["--input", i]
    for o in outputs:
        args += ["--output", o]
    if memo is not None:
        args += ["--memo", memo]
    if client_id is not None:
        args += ["--client-id", str(client_id)]
    tx_id = subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip().split()[-1]
    check(len(tx_id) == 64, f"cas tx printed {tx_id!r}")
    return tx_id


def stream(api, start, owner, count):
    """Reads `count` lines of the block stream from `start`, filtered by owner, then disconnects."""
    lines = []
    url = f"{api}/v1/blocks?from={start}&owner={owner}"
    with urllib.request.urlopen(url, timeout=30) as response:
        for raw in response:
            lines.append(json.loads(raw))
            if len(lines) == count:
                break
    return lines


cluster_run = Cluster(CAS, CLUSTER)
try:
    cluster = cluster_run.wait_ready()
    apis = [n["api"] for n in cluster["nodes"]]
    a, b = cluster["accounts"][0], cluster["accounts"][1]

    # 1. The sender's balance and outputs.
    status, balance = http("GET", f"{apis[0]}/v1/accounts/{a['owner']}/balance")
    check(status == 200 and len(balance["balances"]) == 1, f"balance: {status} {balance}")
    funds = int(balance["balances"][0]["amount"])
    status, utxos = http("GET", f"{apis[0]}/v1/accounts/{a['owner']}/utxos")
    check(status == 200 and len(utxos["utxos"]) == 1, f"utxos: {status} {utxos}")
    coin = f"{utxos['utxos'][0]['tx']}:{utxos['utxos'][0]['index']}"
    status, before = http("GET", f"{apis[3]}/v1/accounts/{b['owner']}/balance")
    received_before = int(before["balances"][0]["amount"])

    # 2. A deposit to b, signed offline, submitted to node 0, held until final.
    deposit = os.path.join(WORK, "deposit.bin")
    fee = 10
    deposit_id = sign(a["key_file"], [coin], [f"{b['owner']}:250", f"{a['owner']}:{funds - 250 - fee}"], fee,
                      deposit, memo="invoice-17", client_id=1)
    body = open(deposit, "rb").read()
    status, answer = http("POST", f"{apis[0]}/v1/tx?wait=final&timeout_ms=20000", body)
    check(status == 200 and answer["status"] == "final" and answer["tx"] == deposit_id,
          f"submit wait=final: {status} {answer}")
    check(answer["rejection"] is None, f"the deposit was rejected: {answer}")
    height = answer["height"]

    # 2b. Balances at past heights: the block before the deposit's, and the deposit's (read on node 1).
    def balance_at(api, owner, at):
        status, body = http("GET", f"{api}/v1/accounts/{owner}/balance?height={at}")
        check(status == 200 and body["height"] == at, f"balance of {owner} at {at}: {status} {body}")
        return int(body["balances"][0]["amount"]) if body["balances"] else 0

    wait_for("the deposit on node 1",
             lambda: http("GET", f"{apis[1]}/v1/tx/{deposit_id}")[1]["status"] == "final" or None, 20)
    check(balance_at(apis[1], a["owner"], height - 1) == funds, "the sender's balance before the deposit")
    check(balance_at(apis[1], a["owner"], height) == funds - 250 - fee, "the sender's balance at the deposit")
    check(balance_at(apis[1], b["owner"], height - 1) == received_before, "the receiver's balance before the deposit")
    check(balance_at(apis[1], b["owner"], height) == received_before + 250, "the receiver's balance at the deposit")
    status, past = http("GET", f"{apis[1]}/v1/accounts/{a['owner']}/utxos?height={height - 1}")
    check(status == 200 and [f"{u['tx']}:{u['index']}" for u in past["utxos"]] == [coin],
          f"the sender's outputs before the deposit: {past}")
    status, ahead = http("GET", f"{apis[1]}/v1/accounts/{a['owner']}/balance?height={10 ** 9}")
    check(status == 404, f"a height above the executed one: {status} {ahead}")

    # 3. The same transaction again: duplicate, with its id. As hex JSON this time.
    status, again = http("POST", f"{apis[0]}/v1/tx", json.dumps({"tx": body.hex()}).encode(), "application/json")
    check(status == 200 and again["status"] == "duplicate" and again["tx"] == deposit_id, f"duplicate: {status} {again}")

    # 4. Garbage: rejected with its code, nothing changes.
    status, garbage = http("POST", f"{apis[1]}/v1/tx", b"\x00not a transaction")
    check(status == 422 and garbage["status"] == "rejected" and garbage["code"] == 1
          and garbage["code_name"] == "undecodable", f"garbage: {status} {garbage}")

    # 5. A double spend of the deposit's input: final, rejected in block order with its code.
    double = os.path.join(WORK, "double.bin")
    double_id = sign(a["key_file"], [coin], [f"{b['owner']}:1", f"{a['owner']}:{funds - 1 - fee}"], fee, double)
    status, spent = http("POST", f"{apis[1]}/v1/tx?wait=final&timeout_ms=20000", open(double, "rb").read())
    check(status == 200 and spent["status"] == "final" and spent["rejection"] is not None
          and spent["rejection"]["code_name"] == "missing_input", f"double spend: {status} {spent}")

    # 6. The status on another node: the same height, index and block, once that node has executed the block
    # (nodes execute a committed block at slightly different times).
    def final_on(api, tx_id):
        return wait_for(f"{tx_id} final on {api}",
                        lambda: (lambda r: r if r[1]["status"] == "final" else None)(http("GET", f"{api}/v1/tx/{tx_id}")),
                        20)

    status, seen = final_on(apis[2], deposit_id)
    check(status == 200 and seen["status"] == "final" and seen["height"] == height
          and seen["block"] == answer["block"] and seen["index"] == answer["index"], f"status on node 2: {seen}")
    status, seen = final_on(apis[2], double_id)
    check(seen.get("rejection", {}).get("code") == 13, f"the double spend's status on node 2: {seen}")
    status, unknown = http("GET", f"{apis[2]}/v1/tx/{'ab' * 32}")
    check(status == 404 and unknown["status"] == "unknown", f"an unknown id: {status} {unknown}")

    # 7. SIGKILL the node the deposit went to; once restarted, it still knows the deposit is final.
    old_pid = cluster["nodes"][0]["pid"]
    os.kill(old_pid, signal.SIGKILL)
    wait_for("node 0's restart", lambda: json.load(open(os.path.join(CLUSTER, "cluster.json")))["nodes"][0]["pid"]
             != old_pid)
    seen = wait_for("node 0's API after the restart", lambda: http("GET", f"{apis[0]}/v1/tx/{deposit_id}")[1])
    check(seen["status"] == "final" and seen["height"] == height and seen["block"] == answer["block"],
          f"status after SIGKILL and restart: {seen}")

    # 8. The receiver's balance, read on node 3 (once it has executed the deposit's block).
    final_on(apis[3], deposit_id)
    status, after = http("GET", f"{apis[3]}/v1/accounts/{b['owner']}/balance")
    check(int(after["balances"][0]["amount"]) == received_before + 250, f"receiver balance: {before} -> {after}")

    # 9. The deposit stream: read some blocks, disconnect, resume from the last height + 1. Heights are
    # consecutive across the reconnect (no gap, no repeat) and the deposit appears exactly once.
    first = stream(apis[3], 1, b["owner"], height // 2 + 1)
    resumed = stream(apis[3], first[-1]["height"] + 1, b["owner"], height - len(first) + 3)
    heights = [line["height"] for line in first + resumed]
    check(heights == list(range(1, len(heights) + 1)), f"stream heights {heights[:5]}..{heights[-5:]}")
    deposits = [t for line in first + resumed for t in line["txs"] if t["tx"] == deposit_id]
    check(len(deposits) == 1 and deposits[0]["memo"] == b"invoice-17".hex(), f"deposits seen: {deposits}")
    check(any(o["owner"] == b["owner"] and o["amount"] == 250 for o in deposits[0]["outputs"]),
          f"the deposit's outputs: {deposits[0]}")

    # 10. Idempotency: another transaction with the deposit's client id, on another node, is a duplicate of the
    # deposit (the node learnt it from the ledger, not from its own admission), and the id resolves to the deposit.
    status, change = http("GET", f"{apis[2]}/v1/accounts/{a['owner']}/utxos")
    change_coin = next(f"{u['tx']}:{u['index']}" for u in change["utxos"] if u["tx"] == deposit_id)
    retry = os.path.join(WORK, "retry.bin")
    retry_id = sign(a["key_file"], [change_coin], [f"{b['owner']}:250", f"{a['owner']}:{funds - 500 - 2 * fee}"], fee,
                    retry, memo="invoice-17", client_id=1)
    check(retry_id != deposit_id, "a different transaction")
    status, dup = http("POST", f"{apis[2]}/v1/tx?wait=final&timeout_ms=20000", open(retry, "rb").read())
    check(status == 200 and dup["status"] == "duplicate" and dup["tx"] == deposit_id, f"client id repeat: {dup}")
    status, by_client = http("GET", f"{apis[3]}/v1/tx/by-client/{a['owner']}/1")
    check(status == 200 and by_client["tx"] == deposit_id and by_client["status"] == "final", f"by client: {by_client}")

    # 11. Two nodes admit two transactions with one client id at once: the ledger applies exactly one.
    c = cluster["accounts"][2]
    status, utxos = http("GET", f"{apis[0]}/v1/accounts/{c['owner']}/utxos")
    c_funds = utxos["utxos"][0]["amount"]
    split = os.path.join(WORK, "split.bin")
    half = (c_funds - fee) // 2
    c_coin = utxos["utxos"][0]
    split_id = sign(c["key_file"], [f"{c_coin['tx']}:{c_coin['index']}"],
                    [f"{c['owner']}:{half}", f"{c['owner']}:{c_funds - fee - half}"], fee, split)
    status, answer = http("POST", f"{apis[0]}/v1/tx?wait=final&timeout_ms=20000", open(split, "rb").read())
    check(answer.get("status") == "final" and answer["rejection"] is None, f"split: {answer}")
    racers = []
    for index, amount in [(0, half), (1, c_funds - fee - half)]:
        path = os.path.join(WORK, f"race{index}.bin")
        sign(c["key_file"], [f"{split_id}:{index}"], [f"{b['owner']}:{amount - fee}"], fee, path, client_id=2)
        racers.append(open(path, "rb").read())
    import threading
    results = [None, None]

    def race(slot, node):
        results[slot] = http("POST", f"{apis[node]}/v1/tx?wait=final&timeout_ms=20000", racers[slot])

    threads = [threading.Thread(target=race, args=(0, 1)), threading.Thread(target=race, args=(1, 3))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    applied = [r for _, r in results if r.get("status") == "final" and r.get("rejection") is None]
    refused = [r for _, r in results if r.get("status") == "duplicate"
               or (r.get("status") == "final" and (r.get("rejection") or {}).get("code_name") == "duplicate_client_id")]
    check(len(applied) == 1 and len(refused) == 1, f"one client id, two nodes: {results}")
    print("one client id on two nodes at once:", [(r["status"], (r.get("rejection") or {}).get("code_name"))
                                                  for _, r in results])

    # 12. Submitted without waiting: `accepted`, then the node that admitted it says `pending` until it is final.
    d = cluster["accounts"][3]
    status, utxos = http("GET", f"{apis[1]}/v1/accounts/{d['owner']}/utxos")
    d_coin = utxos["utxos"][0]
    later = os.path.join(WORK, "later.bin")
    later_id = sign(d["key_file"], [f"{d_coin['tx']}:{d_coin['index']}"],
                    [f"{b['owner']}:7", f"{d['owner']}:{d_coin['amount'] - 7 - fee}"], fee, later)
    status, accepted = http("POST", f"{apis[1]}/v1/tx", open(later, "rb").read())
    check(status == 202 and accepted["status"] == "accepted", f"submit without waiting: {status} {accepted}")
    status, asked = http("GET", f"{apis[1]}/v1/tx/{later_id}")
    check(asked["status"] in ("pending", "final"), f"status right after accepted: {asked}")
    final_on(apis[1], later_id)

    # 13. Settlement receipts, checked offline with the genesis alone: the deposit (applied) from node 2, the double
    # spend (rejected in block order) from node 3. The certificate forms just after execution: retry while 503.
    def receipt(api, tx_id, name):
        def probe():
            status, body = http("GET", f"{api}/v1/tx/{tx_id}/receipt")
            if status == 503 and body["status"] == "uncertified":
                return None
            check(status == 200, f"receipt of {tx_id}: {status} {body}")
            return body
        body = wait_for(f"the receipt of {tx_id}", probe, 20)
        path = os.path.join(WORK, name)
        with open(path, "w") as f:
            json.dump(body, f, indent=1)
        return path, body

    def verify(path):
        return subprocess.run([CAS, "receipt", "verify", path, "--genesis", cluster["genesis"]],
                              capture_output=True, text=True)

    deposit_receipt, deposit_body = receipt(apis[2], deposit_id, "deposit.receipt.json")
    checked = verify(deposit_receipt)
    check(checked.returncode == 0 and f"tx {deposit_id} is final at height {height}" in checked.stdout
          and "applied" in checked.stdout, f"the deposit's receipt: {checked.stdout} {checked.stderr}")
    print(checked.stdout.strip())
    double_receipt, _ = receipt(apis[3], double_id, "double.receipt.json")
    checked = verify(double_receipt)
    check(checked.returncode == 0 and "rejected with code 13 (missing_input)" in checked.stdout,
          f"the double spend's receipt: {checked.stdout} {checked.stderr}")
    # One byte changed, in each part of the receipt: the transaction, each Merkle path, the header, the statement
    # and a signature. Every one fails, and says which check did not hold.
    text = open(deposit_receipt).read()
    cert = deposit_body["certificate"]
    for field in [deposit_body["tx"], deposit_body["results_path"][0]["sibling"] if deposit_body["results_path"]
                  else deposit_body["tx_id"], deposit_body["header"]["tx_root"], cert["statement"]["results_root"],
                  cert["signatures"][0]["signature"]]:
        at = text.index(field) + len(field) // 2
        changed = text[:at] + ("0" if text[at] != "0" else "1") + text[at + 1:]
        path = os.path.join(WORK, "changed.receipt.json")
        open(path, "w").write(changed)
        refused = verify(path)
        check(refused.returncode != 0 and "receipt" in refused.stderr,
              f"a receipt with one byte changed passed: {refused.stdout} {refused.stderr}")
    print("a receipt with one byte changed fails:", refused.stderr.strip().splitlines()[-1])

    # 14. The codes are listed.
    status, codes = http("GET", f"{apis[0]}/v1/codes")
    names = {code["code_name"] for code in codes["codes"]}
    check({"undecodable", "missing_input", "bad_signature", "duplicate_client_id"} <= names, f"{codes}")
finally:
    output = cluster_run.stop()

check("every node at the same commitment" in output, "the nodes did not end at the same commitment")
print("exchange API: all checks passed")
