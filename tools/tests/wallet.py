#!/usr/bin/env python3
"""The SPV wallet against a real cluster: `cas wallet sync|verify|balance` with a 4-node `cas local --serve`.

Usage: wallet.py CAS_BINARY WORK_DIR

Starts the cluster, pays account b from account a and waits for the payment's receipt, syncs a wallet's certified
headers from one node, pays again and resumes the sync from another node from the stored height (the second
payment is refused before it and verified after it), verifies the first payment's receipt
file and its tx id against the stored headers alone, checks that a receipt with a changed transaction, verdict or
place is refused, that a stored header file with one byte changed is refused, and that the SPV balance of b proves
what the node reports. Exits non-zero with a message on the first thing that is not as it must be.
"""

import json
import os
import re
import subprocess
import sys

from harness import Cluster, check, coin_of, final, http, sign_tx, wait_for

CAS, WORK = sys.argv[1], sys.argv[2]
WALLET = os.path.join(WORK, "wallet")


def cas(*args):
    return subprocess.run([CAS, *args], capture_output=True, text=True, timeout=120)


def wallet(*args):
    return cas("wallet", *args, "--dir", WALLET)


cluster_run = Cluster(CAS, os.path.join(WORK, "cluster"))
try:
    cluster = cluster_run.wait_ready()
    apis = [n["api"] for n in cluster["nodes"]]
    a, b = cluster["accounts"][0], cluster["accounts"][1]

    # 1. A payment from a to b, final, and its receipt once the certificate formed.
    coin, amount = coin_of(apis[0], a["owner"])
    paid = 250
    tx_id, body = sign_tx(CAS, WORK, "pay", a["key_file"], [coin],
                          [f"{b['owner']}:{paid}", f"{a['owner']}:{amount - paid - 10}"], 10)
    height = final(apis[0], body, "the payment")["height"]

    def receipt_of(tx, name):
        def ready():
            status, answer = http("GET", f"{apis[1]}/v1/tx/{tx}/receipt")
            return status == 200 and answer
        body = wait_for(f"the receipt of {tx}", ready, 20)
        path = os.path.join(WORK, f"{name}.receipt.json")
        with open(path, "w") as f:
            json.dump(body, f, indent=1)
        return body, path
    receipt, receipt_file = receipt_of(tx_id, "pay")

    # 2. Before any sync the wallet has nothing to check against.
    early = wallet("verify", receipt_file)
    check(early.returncode != 0 and "--genesis" in early.stderr, f"verify before sync: {early.stderr}")

    # 3. Sync from node 1, then resume from node 2.
    synced = wallet("sync", "--api", apis[1], "--genesis", cluster["genesis"])
    check(synced.returncode == 0 and "synced: certified headers 0..=" in synced.stdout,
          f"sync: {synced.stdout} {synced.stderr}")
    tip = int(re.search(r"certified headers 0..=(\d+)", synced.stdout).group(1))
    check(tip >= height, f"synced to {tip}, the payment is at {height}")
    print(synced.stdout.strip().splitlines()[-1])
    # A second payment, sent by the wallet through another node, lands above the stored headers: refused until the
    # resumed sync certifies its height.
    sent = cas("wallet", "send", "--api", apis[3], "--key", a["key_file"], "--chain-id", "1", "--to", b["owner"],
               "--amount", str(paid), "--fee", "10")
    check(sent.returncode == 0, f"wallet send: {sent.stdout} {sent.stderr}")
    answer = json.loads(sent.stdout.strip().splitlines()[-1])
    later_id, later_height = answer["tx"], answer["height"]
    _, later_file = receipt_of(later_id, "later")
    above = wallet("verify", later_file)
    check(above.returncode != 0 and "is not certified here" in above.stderr, f"verify above the tip: {above.stderr}")
    resumed = wallet("sync", "--api", apis[2])
    check(resumed.returncode == 0 and f"wallet at certified height {tip}" in resumed.stdout,
          f"resumed sync: {resumed.stdout} {resumed.stderr}")
    resumed_tip = int(re.search(r"certified headers 0..=(\d+)", resumed.stdout).group(1))
    check(resumed_tip >= later_height > tip, f"resumed to {resumed_tip}: {resumed.stdout}")
    print(resumed.stdout.strip().splitlines()[-1])
    later = wallet("verify", later_file)
    check(later.returncode == 0 and f"tx {later_id} is at height {later_height}" in later.stdout,
          f"the second payment: {later.stdout} {later.stderr}")

    # 4. The payment, from the receipt file and by tx id, checked against the stored headers.
    checked = wallet("verify", receipt_file)
    check(checked.returncode == 0 and f"tx {tx_id} is at height {height}" in checked.stdout
          and "applied" in checked.stdout and f"{paid} of asset CAS to {b['owner']}" in checked.stdout,
          f"verify: {checked.stdout} {checked.stderr}")
    print(checked.stdout.strip())
    by_id = wallet("verify", tx_id, "--api", apis[3])
    check(by_id.returncode == 0 and f"tx {tx_id}" in by_id.stdout, f"verify by id: {by_id.stdout} {by_id.stderr}")

    # 5. A receipt changed in its transaction, its verdict, its place or a Merkle path is refused.
    def changed(edit, name):
        body = json.loads(json.dumps(receipt))
        edit(body)
        path = os.path.join(WORK, f"{name}.receipt.json")
        with open(path, "w") as f:
            json.dump(body, f)
        refused = wallet("verify", path)
        check(refused.returncode != 0 and refused.stderr.startswith("error:"),
              f"a receipt with a changed {name} passed: {refused.stdout} {refused.stderr}")
        return refused.stderr.strip()

    def flip(text):
        at = len(text) // 2
        return text[:at] + ("0" if text[at] != "0" else "1") + text[at + 1:]

    def edit_tx(body):
        body["tx"] = flip(body["tx"])
    print("changed tx:", changed(edit_tx, "tx"))
    print("changed code:", changed(lambda body: body.update(code=13), "code"))
    print("changed index:", changed(lambda body: body.update(index=body["index"] + 1), "index"))
    for path_name in ("tx_path", "results_path"):
        if receipt[path_name]:
            def edit_path(body, path_name=path_name):
                body[path_name][0]["sibling"] = flip(body[path_name][0]["sibling"])
            print(f"changed {path_name}:", changed(edit_path, path_name))

    # 6. The SPV balance of b proves what the node reports.
    status, utxos = http("GET", f"{apis[0]}/v1/accounts/{b['owner']}/utxos")
    check(status == 200, f"utxos: {status} {utxos}")
    reported = sum(u["amount"] for u in utxos["utxos"] if u["asset"] == "00" * 32)
    spv = wallet("balance", "--owner", b["owner"], "--api", apis[0])
    check(spv.returncode == 0 and f"CAS: {reported} proved" in spv.stdout and "still unspent" in spv.stdout,
          f"balance (the node reports {reported}): {spv.stdout} {spv.stderr}")
    print(spv.stdout.strip())

    # 7. A stored header file with one byte changed is refused.
    headers = os.path.join(WALLET, "headers.bin")
    data = bytearray(open(headers, "rb").read())
    data[len(data) // 2] ^= 1
    open(headers, "wb").write(bytes(data))
    torn = wallet("verify", receipt_file)
    check(torn.returncode != 0 and "stored headers" in torn.stderr, f"a changed header file: {torn.stderr}")
    print("a changed header file:", torn.stderr.strip())
finally:
    cluster_run.stop()
print("wallet: all checks passed")
