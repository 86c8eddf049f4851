#!/usr/bin/env python3
"""Committee hand-over on a real cluster (issue 19): a follower is elected into the committee and a member leaves it,
each switching role in its own process, under a light load.

Usage: handover.py CAS_BINARY WORK_DIR

Starts `cas local --serve --followers 3 --epoch-blocks 32 --hand-over` (protocol version 3: each epoch's elected
committee runs its own BFT instance). Follower 4's node key gets CAS from an account and declares its candidacy with
a self-bond of 1 and its netio address; the account delegates 100 to it (101 in all; the genesis members hold 100
each). The next election puts it first and
the three genesis members with the smallest keys after it; at that epoch's first height follower 4 joins the
committee (it starts the member path at the epoch's base, from its own ledger) and the member with the largest key
leaves it (it follows the certified ledger). Meanwhile two accounts keep paying through a member that stays and
through a follower, and just before the boundary five accounts submit to the leaver. Checks: both switches happen
without the processes restarting; the new committee commits, and
the leaver and the other followers keep following it; every payment is final and accepted, and so is every
transaction the leaver answered `accepted`; a receipt of a payment the new committee certified, from a staying member
and from the joiner, verifies offline against the genesis through the certified hand-overs it carries; every block's issuance
in the new epoch pays exactly the previous block's fees by the formula (70% to the certificate's signers of the new
committee by stake, 30% to the POS nodes by stake; the signers are not in the ledger block, so one subset of the new
committee holding a quorum must give exactly the paid outputs; an epoch's first block carries its base's certificate,
signed by nobody, so all of it goes to the POS nodes); and all 7 nodes end at one commitment.
Exits non-zero with a message on the first thing that is not as it must be.
"""

import itertools
import json
import os
import subprocess
import sys
import threading
import tomllib

import harness
from harness import Cluster, Payer, check, coin_of, final, http, sign_tx, wait_for

CAS, WORK = sys.argv[1], sys.argv[2]
FOLDER = os.path.join(WORK, "cluster")
FEE = 10
EPOCH_BLOCKS = 32
SELF_BOND = 1
DELEGATED = 100
BOND = SELF_BOND + DELEGATED


def sign(name, key_file, inputs, outputs, extra=()):
    return sign_tx(CAS, WORK, name, key_file, inputs, outputs, FEE, extra=extra)


def status_of(index):
    return harness.status_of(FOLDER, index)


def role_of(index):
    return harness.role_of(FOLDER, index)


def payouts(pot, voters, pos, share_percent=70):
    """stake::validator_payouts, with POS nodes present: no voters (the first block of an epoch carries its base's
    certificate, which no one signed) leave the whole pot to the POS nodes."""
    by_stake = lambda lst: sorted([p for p in lst if p[1] > 0], key=lambda p: (-p[1], p[0]))
    voters, pos = by_stake(voters), by_stake(pos)
    committee = pot * share_percent // 100 if voters else 0
    paid = {}
    for share, payees in ((committee, voters), (pot - committee, pos)):
        total = sum(s for _, s in payees)
        if share == 0 or total == 0:
            continue
        given = 0
        for key, stake in payees:
            amount = share * stake // total
            given += amount
            paid[key] = paid.get(key, 0) + amount
        paid[payees[0][0]] = paid.get(payees[0][0], 0) + share - given
    return {k: v for k, v in paid.items() if v > 0}


cluster_run = Cluster(CAS, FOLDER,
                      extra=["--followers", "3", "--epoch-blocks", str(EPOCH_BLOCKS), "--hand-over"])
payers = []
try:
    cluster = cluster_run.wait_ready()
    members = [n["api"] for n in cluster["nodes"]]
    followers = [f["api"] for f in cluster["followers"]]
    pids = {n["index"]: n["pid"] for n in cluster["nodes"] + cluster["followers"]}
    a, b, c = cluster["accounts"][:3]
    keys = {i: harness.node_key(CAS, FOLDER, i) for i in range(7)}
    leaver = max(range(4), key=lambda i: keys[i])
    staying = [i for i in range(4) if i != leaver]
    joiner = keys[4]
    print("member keys", [keys[i][:8] for i in range(4)], "leaver: node", leaver, "joiner: node 4", joiner[:8])

    # Light load through a member that stays and through a follower that stays one.
    payers = [Payer(CAS, WORK, "b", b, members[staying[0]], FEE), Payer(CAS, WORK, "c", c, followers[1], FEE)]
    for payer in payers:
        payer.start()

    # 1. Follower 4's key gets CAS, and declares its candidacy with a self-bond at its netio address.
    node4 = tomllib.load(open(os.path.join(WORK, "cluster", "node4.toml"), "rb"))
    key_file = node4["key_file"]
    coin, funds = coin_of(members[staying[0]], a["owner"])
    fund_id, fund = sign("fund", a["key_file"], [coin], [f"{joiner}:1000", f"{a['owner']}:{funds - 1000 - FEE}"])
    final(members[staying[0]], fund, "funding the candidate")
    declare_id, declare = sign("declare", key_file, [f"{fund_id}:0"],
                               [f"{joiner}:{SELF_BOND}:stake-{joiner}", f"{joiner}:{1000 - SELF_BOND - FEE}"],
                               ["--candidacy", node4["listen"]])
    final(members[staying[0]], declare, "the candidacy")
    # Stake moves to it by delegation: the account bonds 100 to the candidate (its stake output stays the account's).
    coin, funds = coin_of(members[staying[0]], a["owner"])
    _, delegate = sign("delegate", a["key_file"], [coin],
                       [f"{a['owner']}:{DELEGATED}:stake-{joiner}", f"{a['owner']}:{funds - DELEGATED - FEE}"],
                       ["--bond", joiner])
    declared = final(members[staying[0]], delegate, "the delegation")
    print("candidacy and delegation final at height", declared["height"])

    # 2. The next election picks it first, then the three members with the smallest keys.
    height = declared["height"]
    epoch = (height + EPOCH_BLOCKS // 2) // EPOCH_BLOCKS + 1
    election = epoch * EPOCH_BLOCKS - EPOCH_BLOCKS // 2
    wait_for(f"the election at {election}", lambda: status_of(staying[0])["height"] >= election, 60)
    status, stake = http("GET", f"{members[staying[0]]}/v1/stake?epoch={epoch}")
    check(status == 200 and stake["next"] is not None, f"epoch {epoch}'s committee: {status} {stake}")
    elected = [m["key"] for m in stake["next"]["members"]]
    check(elected == [joiner] + sorted(keys[i] for i in staying), f"epoch {epoch}'s committee: {stake['next']}")
    first = epoch * EPOCH_BLOCKS + 1
    print(f"epoch {epoch} (from height {first}) elected:", [k[:8] for k in elected])

    # 2b. Just before the boundary, five accounts submit to the leaver without waiting for finality: what it answers
    # `accepted` (held by a quorum) must become final, also when its epoch ends first (the leaver hands what it
    # admitted and its epoch did not commit to the next committee, or carries it into its own next instance).
    wait_for(f"node {leaver} near height {first}", lambda: status_of(leaver)["height"] >= first - 4, 60)
    accepted, answers = [], []

    def submit_to_leaver(account, n):
        try:
            coin, amount = coin_of(members[staying[0]], account["owner"])
            tx_id, tx = sign(f"late{n}", account["key_file"], [coin], [f"{account['owner']}:{amount - FEE}"])
            status, answer = http("POST", f"{members[leaver]}/v1/tx?timeout_ms=10000", tx)
            answers.append((status, answer.get("status")))
            if status in (200, 202) and answer.get("status") == "accepted":
                accepted.append(tx_id)
        except OSError as error:
            answers.append(("error", repr(error)))  # the leaver's API restarting: nothing promised

    late = [threading.Thread(target=submit_to_leaver, args=(account, n))
            for n, account in enumerate(cluster["accounts"][3:8])]
    for thread in late:
        thread.start()
    for thread in late:
        thread.join(30)

    # 3. At its first height node 4 becomes a member and the leaver a follower, in the same processes.
    wait_for("node 4 a member", lambda: role_of(4) == "member" and status_of(4)["consensus"]["epoch"] >= epoch, 90)
    wait_for(f"node {leaver} a follower", lambda: role_of(leaver) == "follower", 60)
    target = first + 3 * EPOCH_BLOCKS
    for i in range(7):
        wait_for(f"node {i} at height {target}", lambda: status_of(i)["height"] >= target, 120)
    check(status_of(4)["consensus"]["commits"] > 0, f"node 4 commits nothing: {status_of(4)['consensus']}")
    now = json.load(open(os.path.join(WORK, "cluster", "cluster.json")))
    restarted = [n["index"] for n in now["nodes"] + now["followers"] if n["pid"] != pids[n["index"]]]
    check(not restarted, f"nodes restarted instead of switching roles: {restarted}")
    print("node 4 member at epoch", status_of(4)["consensus"]["epoch"], "; node", leaver, "follows at height",
          status_of(leaver)["height"])
    # Its operator endpoint names the committee it serves in now, itself first (the most stake).
    status, operator = http("GET", f"{cluster['followers'][0]['operator']}/status")
    check(status == 200 and [m["key"] for m in operator["committee"]] == elected and operator["member"] == 0,
          f"node 4's /status: {status} {operator}")

    # 4. The payments: all final and accepted, through the hand-over; and what the leaver accepted, final.
    for tx_id in accepted:
        wait_for(f"{tx_id} final", lambda: http("GET", f"{members[staying[0]]}/v1/tx/{tx_id}")[1]
                 .get("status") == "final", 30)
    print("the leaver's answers at the boundary:", answers, "; the accepted ones are final")
    for payer in payers:
        payer.stopping = True
    for payer in payers:
        payer.join(60)
        check(not payer.failures, f"payer {payer.name_}: {payer.failures[:3]}")
        check(payer.done >= 5, f"payer {payer.name_} made only {payer.done} payments")
    print("payments final:", [p.done for p in payers])

    # 4b. Settlement receipts of a payment the new committee certified, from a member that stayed and from the
    # joiner (which took the hand-overs from its upstream while it followed), each checked offline against the
    # genesis alone: the receipt carries the certified hand-overs from the genesis committee to the new one.
    late_tx, late_height = next((t, h) for t, h in payers[0].finals if h > first + EPOCH_BLOCKS)
    for source in (members[staying[0]], followers[0]):
        status, body = http("GET", f"{source}/v1/tx/{late_tx}/receipt")
        check(status == 200 and len(body["handovers"]) >= 1, f"the receipt from {source}: {status} {body}")
        path = os.path.join(WORK, "late.receipt.json")
        json.dump(body, open(path, "w"))
        checked = subprocess.run([CAS, "receipt", "verify", path, "--genesis", cluster["genesis"]],
                                 capture_output=True, text=True)
        check(checked.returncode == 0 and "applied" in checked.stdout,
              f"the receipt from {source}: {checked.stdout} {checked.stderr}")
    status, listed = http("GET", f"{members[staying[0]]}/v1/handovers")
    check(status == 200 and [h["epoch"] for h in listed["handovers"]][:1] == [1], f"/v1/handovers: {listed}")
    print(f"receipts of {late_tx[:8]} (height {late_height}) verified with", len(body["handovers"]), "hand-overs")

    # 5. Rewards in the new committee's epochs: each issuance pays the previous block's fees by the formula, with a
    # quorum of the new committee as the certificate's signers.
    stakes = {m["key"]: m["stake"] for m in stake["next"]["members"]}
    pos = [(k, 100) for k in keys.values() if k in [keys[i] for i in range(4)]] + [(joiner, BOND)]
    quorum = sum(stakes.values()) * 2 // 3 + 1
    checked = 0
    api = members[staying[0]]
    for h in range(first + 1, target):
        _, previous = http("GET", f"{api}/v1/blocks/{h - 1}")
        _, block = http("GET", f"{api}/v1/blocks/{h}")
        fees = sum(t["fee"] for t in previous["txs"] if t["kind"] != "issuance" and t["rejection"] is None)
        issuance = block["txs"][-1]
        paid = {}
        for o in issuance["outputs"]:
            paid[o["owner"]] = paid.get(o["owner"], 0) + o["amount"]
        if fees == 0:
            check(not paid, f"block {h} pays {paid} for no fees")
            continue
        if (h - 1) % EPOCH_BLOCKS == 0:
            options = [payouts(fees, [], pos)]
        else:
            options = [payouts(fees, [(k, stakes[k]) for k in signers], pos)
                       for n in range(1, 5) for signers in itertools.combinations(stakes, n)
                       if sum(stakes[k] for k in signers) >= quorum]
        check(paid in options, f"block {h} pays {paid} for fees {fees}; the formula allows {options}")
        checked += 1
    check(checked > 0, "no block with fees in the new epochs")
    print("issuances checked against the formula:", checked)
finally:
    for payer in payers:
        payer.stopping = True
    output = cluster_run.stop()
check("every node at the same commitment" in output, f"the nodes did not end at one commitment: {output[-2000:]}")
print("handover: all checks passed")
