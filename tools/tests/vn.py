#!/usr/bin/env python3
"""Two business networks (VNs), three RS each, on a real cluster (issue 21).

Usage: vn.py CAS_BINARY WORK_DIR

Starts `cas local --serve --business` (4 nodes); d issues GOLD and hands some to e and f; registers VN 1 (RS r1,
r2, r3; two endorsements needed) and VN 2 (r4, r5, r6; all three needed, and a fee rule of 7 GOLD to h on every
transaction) with `cas vn register`, and starts six `cas rs` processes, each holding one account and knowing its
VN's other RS as peers. Then: a VN transaction without its Policy's endorsements is refused with `not_endorsed`
(none for VN 1; one of three for VN 2), and one with all three but no GOLD fee with `vn_fee_unpaid`; each RS pays
through its AI endpoint (`POST /v1/pay`, endorsed by itself and its peers, VN 2's with the fee) and the payment is
final; every RS's local ledger equals the node's balances for its account, and h holds the three fees; on the
wire (each RS's log of the lines it was served) an RS of one VN never received a transaction of the
other, and the public block routes show no VN transaction; an RS of VN 2 asking for VN 1's stream is refused. Exits
non-zero with a message on the first thing that is not as it must be.
"""

import json
import os
import socket
import subprocess
import sys
import time

from harness import Cluster, check, coin_of, http, sign_tx, wait_for

CAS, WORK = sys.argv[1], sys.argv[2]
FEE = 10
CAS_ASSET = "00" * 32


def keygen(name):
    path = os.path.join(WORK, f"{name}.key")
    public = subprocess.run([CAS, "keygen", "--out", path], check=True, capture_output=True, text=True).stdout
    return path, public.split()[-1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def submit(api, body, what):
    status, answer = http("POST", f"{api}/v1/tx?wait=final&timeout_ms=60000", body)
    check(status == 200 and answer.get("status") == "final", f"{what}: {status} {answer}")
    return answer


def register(api, payer, vn, endorsers, threshold, fee=()):
    cas_coin, funds = coin_of(api, payer["owner"])
    extra = ["--id", str(vn), "--threshold", str(threshold), *fee] + [a for e in endorsers for a in ("--endorser", e)]
    _, body = sign_tx(CAS, WORK, f"register-{vn}", payer["key_file"], [cas_coin], [f"{payer['owner']}:{funds - FEE}"],
                      FEE, extra=extra, command=("vn", "register"))
    answer = submit(api, body, f"the registration of VN {vn}")
    check(answer["rejection"] is None, f"VN {vn} registered: {answer}")


def node_balance(api, owner, asset=CAS_ASSET):
    status, answer = http("GET", f"{api}/v1/accounts/{owner}/balance")
    check(status == 200, f"balance of {owner}: {status} {answer}")
    return next((int(b["amount"]) for b in answer["balances"] if b["asset"] == asset), 0)


def coin_in(api, owner, asset):
    status, utxos = http("GET", f"{api}/v1/accounts/{owner}/utxos")
    found = [(f"{u['tx']}:{u['index']}", int(u["amount"])) for u in utxos["utxos"] if u["asset"] == asset]
    check(status == 200 and found, f"{owner} holds no {asset}: {utxos}")
    return max(found, key=lambda c: c[1])


cluster_run = Cluster(CAS, os.path.join(WORK, "cluster"), extra=["--business"])
rs_processes = []
try:
    cluster = cluster_run.wait_ready()
    apis = [n["api"] for n in cluster["nodes"]]
    accounts = cluster["accounts"][:8]
    api = apis[0]

    # 1. d issues GOLD (a fixed supply) and hands e and f 1,000 each: VN 2's fee token.
    d, e, f, h = accounts[3], accounts[4], accounts[5], accounts[7]
    cas_coin, funds = coin_of(api, d["owner"])
    out = os.path.join(WORK, "issue.bin")
    gold = subprocess.run(
        [CAS, "token", "issue", "--key", d["key_file"], "--chain-id", "1", "--fee", str(FEE), "--out", out,
         "--input", cas_coin, "--output", f"{d['owner']}:1000000:new", "--output", f"{d['owner']}:{funds - FEE}",
         "--nonce", "1", "--name", "Gold", "--symbol", "GOLD", "--max-supply", "1000000"],
        check=True, capture_output=True, text=True).stdout.split()[1]
    check(submit(api, open(out, "rb").read(), "the GOLD issue")["rejection"] is None, "GOLD issued")
    gold_coin, _ = coin_in(api, d["owner"], gold)
    cas_coin, funds = coin_of(api, d["owner"])
    _, body = sign_tx(CAS, WORK, "hand-gold", d["key_file"], [gold_coin, cas_coin],
                      [f"{e['owner']}:1000:{gold}", f"{f['owner']}:1000:{gold}", f"{d['owner']}:998000:{gold}",
                       f"{d['owner']}:{funds - FEE}"], FEE)
    check(submit(api, body, "GOLD to e and f")["rejection"] is None, "GOLD handed out")

    # 2. Six RS keys; VN 1 asks two of r1-r3, VN 2 all of r4-r6 and 7 GOLD to h on every transaction.
    rs_keys = [keygen(f"r{i}") for i in range(1, 7)]
    register(api, accounts[6], 1, [k for _, k in rs_keys[:3]], 2)
    register(api, h, 2, [k for _, k in rs_keys[3:]], 3,
             fee=["--fee-token", gold, "--fee-amount", "7", "--fee-collector", h["owner"]])
    status, policy = http("GET", f"{apis[1]}/v1/vns/2")
    check(status == 200 and policy["threshold"] == 3 and policy["endorsers"] == 3
          and policy["fee"] == {"token": gold, "amount": 7, "collector": h["owner"]}, f"VN 2's Policy: {policy}")

    # 3. The six RS, one account each, their VN's other RS as peers.
    ports = [free_port() for _ in range(6)]
    endpoints = [f"http://127.0.0.1:{p}" for p in ports]
    for i in range(6):
        vn = 1 if i < 3 else 2
        group = range(0, 3) if vn == 1 else range(3, 6)
        folder = os.path.join(WORK, f"rs{i + 1}")
        config = os.path.join(WORK, f"rs{i + 1}.toml")
        with open(config, "w") as f:
            f.write(f'api = "{apis[i % 4]}"\nlisten = "127.0.0.1:{ports[i]}"\nvn = {vn}\nchain_id = 1\n'
                    f'key = "{rs_keys[i][0]}"\naccounts = ["{accounts[i]["key_file"]}"]\n'
                    f'peers = {json.dumps([endpoints[j] for j in group if j != i])}\nfee = {FEE}\n'
                    f'dir = "{folder}"\n')
        log = open(os.path.join(WORK, f"rs{i + 1}.log"), "w")
        rs_processes.append((subprocess.Popen([CAS, "rs", "--config", config], stdout=log, stderr=subprocess.STDOUT),
                             folder))
    for endpoint in endpoints:
        wait_for(f"{endpoint} up", lambda e=endpoint: http("GET", f"{e}/v1/balances")[0] == 200, 60)

    # 4. Without the endorsements its Policy asks, or without its fee, a VN's transaction is refused.
    a = accounts[0]
    cas_coin, funds = coin_of(api, a["owner"])
    _, bare = sign_tx(CAS, WORK, "bare", a["key_file"], [cas_coin], [f"{a['owner']}:{funds - FEE}"], FEE,
                      extra=["--vn", "1"])
    answer = submit(api, bare, "an unendorsed VN 1 payment")
    check((answer["rejection"] or {}).get("code_name") == "not_endorsed", f"refused, not endorsed: {answer}")
    cas_coin, funds = coin_of(api, d["owner"])
    sign_tx(CAS, WORK, "one-of-three", d["key_file"], [cas_coin], [f"{d['owner']}:{funds - FEE}"], FEE,
            extra=["--vn", "2"])
    endorsed = os.path.join(WORK, "one-of-three-endorsed.bin")
    subprocess.run([CAS, "vn", "endorse", "--key", rs_keys[3][0], "--tx", os.path.join(WORK, "one-of-three.bin"),
                    "--out", endorsed], check=True, capture_output=True)
    answer = submit(apis[2], open(endorsed, "rb").read(), "a VN 2 payment with one endorsement of three")
    check((answer["rejection"] or {}).get("code_name") == "not_endorsed", f"refused, not endorsed: {answer}")
    # Another body (a tx id leaves the signatures out: the same body again would be a duplicate), all three endorse.
    cas_coin, funds = coin_of(api, d["owner"])
    sign_tx(CAS, WORK, "no-fee", d["key_file"], [cas_coin], [f"{e['owner']}:1", f"{d['owner']}:{funds - FEE - 1}"],
            FEE, extra=["--vn", "2"])
    endorsed = os.path.join(WORK, "no-fee.bin")
    for i, (key_file, _) in enumerate(rs_keys[3:]):
        source, endorsed = endorsed, os.path.join(WORK, f"all-three-{i}.bin")
        subprocess.run([CAS, "vn", "endorse", "--key", key_file, "--tx", source, "--out", endorsed], check=True,
                       capture_output=True)
    answer = submit(apis[2], open(endorsed, "rb").read(), "a VN 2 payment endorsed by all three, without the fee")
    check((answer["rejection"] or {}).get("code_name") == "vn_fee_unpaid", f"refused, fee unpaid: {answer}")

    # 5. Each RS pays the next account of its VN through its AI endpoint: endorsed, final (VN 2's with the fee).
    finals = {1: [], 2: []}
    for i in range(6):
        vn = 1 if i < 3 else 2
        to = accounts[(i + 1) % 3 + (0 if vn == 1 else 3)]
        status, answer = http("POST", f"{endpoints[i]}/v1/pay",
                              json.dumps({"from": accounts[i]["owner"], "to": to["owner"], "amount": 1000 * (i + 1)}).encode(),
                              content_type="application/json", timeout=90)
        check(status == 200 and answer.get("status") == "final" and answer.get("rejection") is None,
              f"rs{i + 1}'s pay: {status} {answer}")
        finals[vn].append((answer["tx"], answer["height"]))
    top = max(h for pays in finals.values() for _, h in pays)
    print(f"pays: VN 1 {[t[:8] for t, _ in finals[1]]}, VN 2 {[t[:8] for t, _ in finals[2]]}, final by height {top}")

    # 6. Every RS's local ledger equals the node's balances of its account (CAS, and GOLD for VN 2's); h has the fees.
    for i, endpoint in enumerate(endpoints):
        local = wait_for(f"rs{i + 1} at height {top}",
                         lambda e=endpoint: (lambda b: b if b["height"] >= top else None)(http("GET", f"{e}/v1/balances")[1]),
                         60)
        owner = accounts[i]["owner"]
        for asset in (CAS_ASSET, gold):
            mine = int(local["balances"].get(owner, {}).get(asset, 0))
            check(mine == node_balance(apis[i % 4], owner, asset), f"rs{i + 1} holds {mine} of {asset}: {local}")
        check(set(local["balances"]) <= {owner}, f"rs{i + 1} keeps only its account: {local['balances'].keys()}")

    check(node_balance(apis[1], h["owner"], gold) == 21, "h collected VN 2's three fees of 7 GOLD")

    # 7. On the wire: an RS of one VN never received the other's transactions; the public routes show none.
    for i, (_, folder) in enumerate(rs_processes):
        vn, other = (1, 2) if i < 3 else (2, 1)
        wire = open(os.path.join(folder, "wire.ndjson")).read()
        served = [tx for line in wire.splitlines() for tx in json.loads(line)["txs"]]
        check(all(tx["vn"] == vn for tx in served), f"rs{i + 1} was served another VN's transaction")
        check(not any(tx_id in wire for tx_id, _ in finals[other]), f"rs{i + 1} saw VN {other}'s payments")
        check(all(tx_id in wire for tx_id, _ in finals[vn]), f"rs{i + 1} was served all of VN {vn}'s payments")
    for tx_id, height in finals[1] + finals[2]:
        status, block = http("GET", f"{apis[3]}/v1/blocks/{height}")
        check(status == 200 and all(tx["tx"] != tx_id for tx in block["txs"]), f"the public block {height} hides VN txs")
    refused = subprocess.run([CAS, "vn", "stream", "--key", rs_keys[3][0], "--vn", "1", "--api", api],
                             capture_output=True, text=True, timeout=30)
    check(refused.returncode != 0 and "403" in refused.stderr, f"an RS of VN 2 refused VN 1's stream: {refused.stderr}")
    print("vn: all checks passed")
finally:
    for process, folder in rs_processes:
        os.makedirs(folder, exist_ok=True)
        open(os.path.join(folder, "stop"), "w").close()
    for process, _ in rs_processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
    cluster_run.stop()
