#!/usr/bin/env python3
"""Punishment on a real cluster (issue 19): a member that stops voting is blacklisted, then evicted, and replaced at
the next hand-over by the next candidate by stake, with the committee live throughout.

Usage: punishment.py CAS_BINARY WORK_DIR

Starts `cas local --serve --followers 1 --epoch-blocks 32 --hand-over --absence-limit 8 --blacklist-blocks 64`:
4 members (100 stake each) and follower 4, which declares its candidacy with a self-bond of 50, so it is the fifth
candidate and no election picks it while the members stand. Then one member's process is stopped (SIGSTOP: it holds
its connections and casts no vote), while an account keeps paying through another member. Checks: the ledger counts
the stopped member absent from each certificate (8 in a row blacklist it, 8 more while blacklisted evict it), as
`GET /v1/stake` shows on a member and on the follower alike; no issuance pays it during its blacklist, while the POS
nodes that vote are paid; the next election after the eviction leaves it out and picks follower 4, which joins the
committee at that epoch's first height in its running process; the new committee commits; every payment is final.
Then the stopped process goes on (SIGCONT), finds itself out of the committee and follows it, and all 5 nodes end at
one commitment. Exits non-zero with a message on the first thing that is not as it must be.
"""

import json
import os
import signal
import sys
import time
import tomllib

import harness
from harness import Cluster, Payer, check, coin_of, final, http, sign_tx, wait_for

CAS, WORK = sys.argv[1], sys.argv[2]
FOLDER = os.path.join(WORK, "cluster")
FEE = 10
EPOCH_BLOCKS = 32
ABSENCE_LIMIT = 8
BLACKLIST_BLOCKS = 64
SELF_BOND = 50


def status_of(index):
    return harness.status_of(FOLDER, index)


def candidate(api, key):
    """The candidate `key` as `GET /v1/stake` on `api` shows it, with the height it was read at."""
    status, stake = http("GET", f"{api}/v1/stake")
    check(status == 200, f"/v1/stake: {status} {stake}")
    found = next((c for c in stake["candidates"] if c["key"] == key), None)
    check(found is not None, f"{key[:8]} is no candidate: {stake['candidates']}")
    return found, stake["height"]


cluster_run = Cluster(CAS, FOLDER, extra=[
    "--followers", "1", "--epoch-blocks", str(EPOCH_BLOCKS), "--hand-over",
    "--absence-limit", str(ABSENCE_LIMIT), "--blacklist-blocks", str(BLACKLIST_BLOCKS)])
payers, stopped = [], None
try:
    cluster = cluster_run.wait_ready()
    members = [n["api"] for n in cluster["nodes"]]
    follower = cluster["followers"][0]["api"]
    pids = {n["index"]: n["pid"] for n in cluster["nodes"] + cluster["followers"]}
    a, b = cluster["accounts"][:2]
    keys = {i: harness.node_key(CAS, FOLDER, i) for i in range(5)}
    victim, api = 1, members[0]
    joiner = keys[4]
    print("member keys", [keys[i][:8] for i in range(4)], "; stopping node", victim, "; candidate node 4",
          joiner[:8])

    # 1. Follower 4 becomes the fifth candidate: CAS to its key, then its candidacy with a self-bond.
    node4 = tomllib.load(open(os.path.join(FOLDER, "node4.toml"), "rb"))
    coin, funds = coin_of(api, a["owner"])
    fund_id, fund = sign_tx(CAS, WORK, "fund", a["key_file"], [coin],
                            [f"{joiner}:1000", f"{a['owner']}:{funds - 1000 - FEE}"], FEE)
    final(api, fund, "funding the candidate")
    _, declare = sign_tx(CAS, WORK, "declare", node4["key_file"], [f"{fund_id}:0"],
                         [f"{joiner}:{SELF_BOND}:stake-{joiner}", f"{joiner}:{1000 - SELF_BOND - FEE}"], FEE,
                         extra=["--candidacy", node4["listen"]])
    declared = final(api, declare, "the candidacy")
    print("candidacy final at height", declared["height"])

    # 2. Light load through a member that keeps voting, so blocks carry fees to pay out.
    payers = [Payer(CAS, WORK, "b", b, api, FEE)]
    payers[0].start()

    # 3. The member stops voting: its process is stopped, its connections held open.
    os.kill(pids[victim], signal.SIGSTOP)
    stopped = pids[victim]
    stopped_at = status_of(0)["height"]
    print("node", victim, "stopped at height", stopped_at)

    # 4. The ledger blacklists it, then evicts it; the follower's ledger says the same.
    first_list, _ = wait_for("the first blacklist", lambda: (lambda c: c if c[0]["blacklists"] >= 1 else None)(
        candidate(api, keys[victim])), 90)
    check(first_list["blacklisted"], f"blacklisted, yet not blacklisted now: {first_list}")
    until = first_list["blacklisted_until"]
    listed_at = until - BLACKLIST_BLOCKS
    print("blacklisted at height", listed_at, "until", until)
    evicted, evicted_height = wait_for("the eviction", lambda: (lambda c: c if c[0]["evicted"] else None)(
        candidate(api, keys[victim])), 90)
    check(evicted["blacklists"] == 2 and not evicted["pos"], f"evicted: {evicted}")
    wait_for("the follower at the eviction", lambda: status_of(4)["height"] >= evicted_height, 60)
    on_follower, _ = candidate(follower, keys[victim])
    check(on_follower["evicted"], f"the follower's ledger: {on_follower}")
    print("evicted by height", evicted_height)

    # 5. No issuance pays it while blacklisted (it is a POS node by stake: before, it took a POS share); the POS
    # nodes that vote are paid meanwhile.
    paid_to = {}
    for h in range(listed_at + 1, evicted_height + 1):
        _, block = http("GET", f"{api}/v1/blocks/{h}")
        for output in block["txs"][-1]["outputs"]:
            paid_to[output["owner"]] = paid_to.get(output["owner"], 0) + output["amount"]
    check(keys[victim] not in paid_to, f"the blacklisted member was paid {paid_to.get(keys[victim])}")
    check(all(keys[i] in paid_to for i in range(4) if i != victim), f"voters unpaid: {paid_to}")
    print(f"blocks {listed_at + 1}..{evicted_height}: paid", {k[:8]: v for k, v in paid_to.items()})

    # 6. The next election leaves it out and picks node 4; at that epoch's first height node 4 joins.
    epoch = (evicted_height + EPOCH_BLOCKS // 2) // EPOCH_BLOCKS + 1
    election = epoch * EPOCH_BLOCKS - EPOCH_BLOCKS // 2
    wait_for(f"the election at {election}", lambda: status_of(0)["height"] >= election, 90)
    status, stake = http("GET", f"{api}/v1/stake?epoch={epoch}")
    check(status == 200 and stake["next"] is not None, f"epoch {epoch}'s committee: {status} {stake}")
    elected = [m["key"] for m in stake["next"]["members"]]
    check(keys[victim] not in elected and joiner in elected and len(elected) == 4,
          f"epoch {epoch}'s committee: {elected}")
    first = epoch * EPOCH_BLOCKS + 1
    print(f"epoch {epoch} (from height {first}) elected:", [k[:8] for k in elected])
    wait_for("node 4 a member", lambda: harness.role_of(FOLDER, 4) == "member"
             and status_of(4)["consensus"]["epoch"] >= epoch, 120)
    target = first + EPOCH_BLOCKS
    wait_for(f"the new committee at height {target}", lambda: status_of(0)["height"] >= target, 120)
    check(status_of(4)["consensus"]["commits"] > 0, f"node 4 commits nothing: {status_of(4)['consensus']}")

    # 7. Every payment final, through the stop, the eviction and the hand-over.
    payers[0].stopping = True
    payers[0].join(60)
    check(not payers[0].failures, f"payer: {payers[0].failures[:3]}")
    check(any(h >= first for _, h in payers[0].finals), f"no payment final in the new epoch: {payers[0].finals[-3:]}")
    print("payments final:", payers[0].done)

    # 8. The stopped process goes on: out of the committee, it follows the new one to its height.
    os.kill(stopped, signal.SIGCONT)
    stopped = None
    wait_for(f"node {victim} a follower", lambda: harness.role_of(FOLDER, victim) == "follower", 90)
    wait_for(f"node {victim} at height {target}", lambda: status_of(victim)["height"] >= target, 120)
    now = json.load(open(os.path.join(FOLDER, "cluster.json")))
    restarted = [n["index"] for n in now["nodes"] + now["followers"] if n["pid"] != pids[n["index"]]]
    check(not restarted, f"nodes restarted: {restarted}")
    print("node", victim, "follows at height", status_of(victim)["height"])
finally:
    if stopped is not None:
        os.kill(stopped, signal.SIGCONT)
    for payer in payers:
        payer.stopping = True
    time.sleep(0.5)
    output = cluster_run.stop()
check("every node at the same commitment" in output, f"the nodes did not end at one commitment: {output[-2000:]}")
print("punishment: all checks passed")
