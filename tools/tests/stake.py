#!/usr/bin/env python3
"""Stake and POS candidacy on a real cluster, through `cas tx` and the HTTP API (issue 19, the ledger part).

Usage: stake.py CAS_BINARY WORK_DIR

Starts `cas local --serve` (4 nodes). Account a declares its candidacy with a self-bond; account b delegates to a;
a bond to an account that never declared, a second declaration and an unbond locked too briefly are refused in
block order with their codes; `GET /v1/stake` (and `cas stake`) on another node lists the genesis members with their
genesis stake and a with the summed stake, its address and POS standing, and elects a first; the next election
(epochs of 16 blocks, one election at the middle of each) is recorded in the ledger and read the same on every
node; b unbonds into CAS locked for the delay, which a's stake loses and b's
locked output shows; every block's issuance pays out exactly the previous block's fees, and a gets exactly its POS
share. Exits non-zero with a message on the first thing that is not as it must be.
"""

import json
import os
import subprocess
import sys
import urllib.request

from harness import Cluster, check, http, sign_tx, wait_for

CAS, WORK = sys.argv[1], sys.argv[2]
FEE = 10


def sign(name, key_file, inputs, outputs, extra):
    return sign_tx(CAS, WORK, name, key_file, inputs, outputs, FEE, extra=extra)


def final(api, body):
    status, answer = http("POST", f"{api}/v1/tx?wait=final&timeout_ms=20000", body)
    check(status == 200 and answer.get("status") == "final", f"submit: {status} {answer}")
    return answer


def coin_of(api, owner):
    status, utxos = http("GET", f"{api}/v1/accounts/{owner}/utxos")
    check(status == 200 and len(utxos["utxos"]) == 1, f"utxos of {owner}: {status} {utxos}")
    u = utxos["utxos"][0]
    return f"{u['tx']}:{u['index']}", int(u["amount"])


EPOCH_BLOCKS = 16
cluster_run = Cluster(CAS, os.path.join(WORK, "cluster"), extra=["--epoch-blocks", str(EPOCH_BLOCKS)])
try:
    cluster = cluster_run.wait_ready()
    apis = [n["api"] for n in cluster["nodes"]]
    a, b, c, d = cluster["accounts"][:4]

    # 1. a declares its candidacy, bonding 600,000 to itself.
    coin, funds = coin_of(apis[0], a["owner"])
    declare_id, declare = sign("declare", a["key_file"], [coin],
                               [f"{a['owner']}:600000:stake-{a['owner']}", f"{a['owner']}:{funds - 600000 - FEE}"],
                               ["--candidacy", "127.0.0.1:9100"])
    answer = final(apis[0], declare)
    check(answer["rejection"] is None, f"the candidacy was refused: {answer}")

    # 2. b delegates 400,000 to a.
    coin, b_funds = coin_of(apis[1], b["owner"])
    delegate_id, delegate = sign("delegate", b["key_file"], [coin],
                                 [f"{b['owner']}:400000:stake-{a['owner']}", f"{b['owner']}:{b_funds - 400000 - FEE}"],
                                 ["--bond", a["owner"]])
    answer = final(apis[1], delegate)
    check(answer["rejection"] is None, f"the delegation was refused: {answer}")
    height = answer["height"]

    # 3. Refusals in block order, each with its code.
    coin, c_funds = coin_of(apis[2], c["owner"])
    _, stray = sign("stray", c["key_file"], [coin],
                    [f"{c['owner']}:1000:stake-{d['owner']}", f"{c['owner']}:{c_funds - 1000 - FEE}"],
                    ["--bond", d["owner"]])
    answer = final(apis[2], stray)
    check((answer["rejection"] or {}).get("code_name") == "not_a_candidate", f"a bond to a non-candidate: {answer}")
    status, utxos = http("GET", f"{apis[0]}/v1/accounts/{a['owner']}/utxos")
    change = next(f"{u['tx']}:{u['index']}" for u in utxos["utxos"] if u["tx"] == declare_id and u["index"] == 1)
    _, again = sign("again", a["key_file"], [change], [f"{a['owner']}:{funds - 600000 - 2 * FEE}"],
                    ["--candidacy", "none"])
    answer = final(apis[3], again)
    check((answer["rejection"] or {}).get("code_name") == "already_candidate", f"a second candidacy: {answer}")

    # 4. The registry on another node (once it has executed the delegation), over HTTP and with `cas stake`.
    def stake_on(api):
        status, body = http("GET", f"{api}/v1/stake")
        check(status == 200, f"GET /v1/stake: {status} {body}")
        return body

    view = wait_for("the delegation on node 3", lambda: (lambda s: s if s["height"] >= height else None)(
        stake_on(apis[3])), 20)
    candidates = {entry["key"]: entry for entry in view["candidates"]}
    # The genesis committee stands as candidates with its genesis stake; a joins them.
    check(len(candidates) == 5 and a["owner"] in candidates, f"candidates: {view}")
    entry = candidates[a["owner"]]
    check(entry["stake"] == 1_000_000 and entry["address"] == "127.0.0.1:9100" and entry["pos"],
          f"a's candidacy: {entry}")
    members = [key for key in candidates if key != a["owner"]]
    check(all(candidates[m]["stake"] == 100 and candidates[m]["address"] is None for m in members),
          f"the genesis members: {view}")
    # Most stake first, the tie among the members to the smaller key.
    check(view["elected"] == [a["owner"]] + sorted(members)[:3], f"elected: {view}")
    printed = subprocess.run([CAS, "stake", "--api", apis[2]], check=True, capture_output=True, text=True).stdout
    check(json.loads(printed)["elected"][0] == a["owner"], f"cas stake printed {printed}")

    # 4b. Elections are ledger facts: at the middle of each epoch the ledger records the committee of the next one.
    # The first election after the delegation puts a first with its 1,000,000, then three genesis members, and every
    # node reads the same committee for that epoch.
    check(view["params"]["epoch_blocks"] == EPOCH_BLOCKS and view["epoch"] == (view["height"] - 1) // EPOCH_BLOCKS,
          f"the epoch schedule: {view}")
    epoch = (height + EPOCH_BLOCKS // 2) // EPOCH_BLOCKS + 1
    election = epoch * EPOCH_BLOCKS - EPOCH_BLOCKS // 2
    recorded = []
    for api in apis:
        wait_for(f"the election at {election} on {api}", lambda: stake_on(api)["height"] >= election or None, 30)
        status, body = http("GET", f"{api}/v1/stake?epoch={epoch}")
        check(status == 200 and body["next"] is not None and body["next"]["epoch"] == epoch,
              f"epoch {epoch}'s committee on {api}: {status} {body}")
        recorded.append(body["next"])
    check(all(r == recorded[0] for r in recorded), f"the nodes disagree on epoch {epoch}'s committee: {recorded}")
    members = recorded[0]["members"]
    check(recorded[0]["first_height"] == epoch * EPOCH_BLOCKS + 1, f"first height: {recorded[0]}")
    check(members[0] == {"key": a["owner"], "address": "127.0.0.1:9100", "stake": 1_000_000}
          and [m["key"] for m in members[1:]] == sorted(k for k in candidates if k != a["owner"])[:3],
          f"epoch {epoch}'s committee: {members}")

    # 5. b unbonds: a lock shorter than the delay is refused, one past it is final and a's stake drops by 400,000.
    delay = view["params"]["unbond_delay_blocks"]
    stake_coin = f"{delegate_id}:0"
    _, short = sign("short", b["key_file"], [stake_coin], [f"{b['owner']}:{400000 - FEE}@{height + 1}"],
                    ["--unbond", a["owner"]])
    answer = final(apis[1], short)
    check((answer["rejection"] or {}).get("code_name") == "unbond_not_locked", f"a short lock: {answer}")
    unlock = answer["height"] + delay + 100
    unbond_id, unbond = sign("unbond", b["key_file"], [stake_coin], [f"{b['owner']}:{400000 - FEE}@{unlock}"],
                             ["--unbond", a["owner"]])
    answer = final(apis[1], unbond)
    check(answer["rejection"] is None, f"the unbond was refused: {answer}")
    view = wait_for("the unbond on node 0", lambda: (lambda s: s if s["height"] >= answer["height"] else None)(
        stake_on(apis[0])), 20)
    check({e["key"]: e["stake"] for e in view["candidates"]}[a["owner"]] == 600_000, f"a's stake after the unbond: {view}")
    status, utxos = http("GET", f"{apis[0]}/v1/accounts/{b['owner']}/utxos")
    locked = [u for u in utxos["utxos"] if u["tx"] == unbond_id]
    check(len(locked) == 1 and locked[0]["unlock_height"] == unlock and locked[0]["amount"] == 400000 - FEE,
          f"b's locked CAS: {utxos}")
    unbond_height = answer["height"]

    # 6. Validator rewards. Two payments with fees after the unbond; then every block's issuance (no mining, block
    # reward 0) pays out exactly the previous block's fees, spending its pot; and from the unbond on, a (a POS node
    # with 600,000 of the 600,400 POS stake, no committee member) gets exactly its share of the 30%, with the
    # remainder (it has the most stake).
    last = unbond_height
    for n in range(2):
        coin, amount = coin_of(apis[2], c["owner"])
        _, pay = sign(f"pay{n}", c["key_file"], [coin], [f"{c['owner']}:{amount - FEE}"], [])
        paid = final(apis[2], pay)
        check(paid["rejection"] is None, f"payment {n}: {paid}")
        last = paid["height"]
    wait_for("two blocks past the payments", lambda: stake_on(apis[0])["height"] >= last + 1 or None, 20)

    def block(height):
        status, body = http("GET", f"{apis[0]}/v1/blocks/{height}")
        check(status == 200, f"block {height}: {status} {body}")
        return body

    blocks = {h: block(h) for h in range(1, last + 2)}
    a_paid = 0
    for h in range(2, last + 2):
        fees = sum(t["fee"] for t in blocks[h - 1]["txs"] if t["kind"] != "issuance" and t["rejection"] is None)
        issuance = blocks[h]["txs"][-1]
        check(issuance["kind"] == "issuance", f"block {h} ends with {issuance}")
        paid = sum(o["amount"] for o in issuance["outputs"])
        check(paid == fees and len(issuance["inputs"]) == (1 if fees else 0),
              f"block {h} pays {paid} with inputs {issuance['inputs']}, block {h - 1} took fees {fees}")
        if h - 1 >= unbond_height and fees:
            pos_share = fees - fees * 70 // 100
            a_share = pos_share * 600_000 // 600_400
            a_share += pos_share - a_share - 4 * (pos_share * 100 // 600_400)
            got = sum(o["amount"] for o in issuance["outputs"] if o["owner"] == a["owner"])
            check(got == a_share, f"block {h}: a got {got} of {fees} in fees, its share is {a_share}")
            a_paid += got
    check(a_paid > 0, "a was paid nothing after the unbond")
    # What the operator sees: the validator rewards the node paid, as a Prometheus counter.
    operator = cluster["nodes"][0]["operator"]
    with urllib.request.urlopen(f"{operator}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    line = next((l for l in metrics.splitlines() if l.startswith("cas_validator_rewards_total ")), None)
    check(line is not None and int(float(line.split()[1])) > 0, f"cas_validator_rewards_total: {line}")
    print("stake: all checks passed")
finally:
    cluster_run.stop()
