#!/usr/bin/env python3
"""CIP governance on a real cluster, through `cas gov` and the HTTP API (issue 21).

Usage: governance.py CAS_BINARY WORK_DIR

Starts `cas local --serve --business` (4 nodes on protocol version 4). Account a proposes raising the minimum fee
to 20 (the window and quorum at the genesis floors), h proposes a text resolution that asks a 50% quorum. a, b and
c vote yes on the first, d votes no; b then moves every coin to g and tries to vote again (refused, already_voted);
g votes with its own ballot only (its snapshot holding, not b's coins); h alone votes on the second. At the windows' end every node answers the same
tally: the first passed, the second failed its quorum. From the change's height on, every node's rules ask the new
minimum: a payment with the old fee is refused (fee_too_low) and one paying the new minimum is accepted. Exits
non-zero with a message on the first thing that is not as it must be.
"""

import os
import subprocess
import sys

from harness import Cluster, Payer, check, coin_of, http, sign_tx, wait_for

CAS, WORK = sys.argv[1], sys.argv[2]
FEE = 10
NEW_MIN_FEE = 20
WINDOW = 100  # the genesis floor (cas_engine::genesis::DEFAULT_WINDOW_BLOCKS_MIN)
GENESIS_AMOUNT = 1_000_000_000  # each account's allocation in `cas local`


def submit(api, body, what):
    status, answer = http("POST", f"{api}/v1/tx?wait=final&timeout_ms=60000", body)
    check(status == 200 and answer.get("status") == "final", f"{what}: {status} {answer}")
    return answer


def accepted(api, body, what):
    answer = submit(api, body, what)
    check(answer["rejection"] is None, f"{what} was refused: {answer}")
    return answer


def refused(api, body, code, what):
    answer = submit(api, body, what)
    check((answer["rejection"] or {}).get("code_name") == code, f"{what}: expected {code}, got {answer}")


def paying(name, who, api, command, extra, fee=FEE, key_files=()):
    """A transaction by `who` paying the fee out of its largest coin, the change back to it."""
    cas_coin, funds = coin_of(api, who["owner"])
    keys = [arg for k in key_files for arg in ("--key", k)]
    return sign_tx(CAS, WORK, name, who["key_file"], [cas_coin], [f"{who['owner']}:{funds - fee}"], fee,
                   extra=[*keys, *extra], command=command)


def vote(name, who, api, proposal, choice):
    return paying(name, who, api, ("gov", "vote"), ["--proposal", proposal, "--choice", choice])


def proposal_on(api, proposal):
    status, answer = http("GET", f"{api}/v1/proposals/{proposal}")
    check(status == 200, f"{api}: proposal {proposal}: {status} {answer}")
    return answer


def height(api):
    status, answer = http("GET", f"{api}/v1/proposals")
    check(status == 200, f"{api}/v1/proposals: {status} {answer}")
    return answer["height"]


cluster_run = Cluster(CAS, os.path.join(WORK, "cluster"), extra=["--business"])
payer = None
try:
    cluster = cluster_run.wait_ready()
    apis = [n["api"] for n in cluster["nodes"]]
    a, b, c, d, e, f, g, h = cluster["accounts"][:8]
    api = apis[0]
    # Blocks keep coming while the windows run: e pays itself, one payment after another.
    payer = Payer(CAS, WORK, "tick", e, apis[3], FEE)
    payer.start()

    # 1. Two proposals: a's changes the minimum fee after its window, h's asks a 50% quorum.
    start = height(api)
    effective_at = start + WINDOW + 40
    raise_fee, body = paying("propose-fee", a, api, ("gov", "propose"),
                             ["--title", "Raise the minimum fee to 20", "--window-blocks", str(WINDOW),
                              "--quorum-bps", "2000", "--approval-bps", "5000", "--param", "min_fee",
                              "--value", str(NEW_MIN_FEE), "--effective-at", str(effective_at)])
    accepted(api, body, "the fee proposal")
    text, body = paying("propose-text", h, apis[1], ("gov", "propose"),
                        ["--title", "A text resolution", "--window-blocks", str(WINDOW), "--quorum-bps", "5000",
                         "--approval-bps", "5000"])
    accepted(apis[1], body, "the text proposal")
    _, body = paying("propose-lax", h, apis[1], ("gov", "propose"),
                     ["--title", "Under the floor", "--window-blocks", str(WINDOW - 1), "--quorum-bps", "2000",
                      "--approval-bps", "5000"])
    refused(apis[1], body, "bad_proposal", "a window under the genesis floor")
    opened = proposal_on(apis[2], raise_fee)
    check(opened["status"] == "open" and opened["ballots"] is not None and int(opened["ballots"]) > 0,
          f"the fee proposal's ballots are minted at its block: {opened}")
    end = opened["end"]

    # 2. Votes: a, b, c yes, d no; b moves its coins to g and tries again; g votes its own ballot; h on its own.
    for i, (who, choice) in enumerate([(a, "yes"), (b, "yes"), (c, "yes"), (d, "no")]):
        _, body = vote(f"vote-{i}", who, apis[i], raise_fee, choice)
        accepted(apis[i], body, f"vote {i}")
    cas_coin, funds = coin_of(api, b["owner"])
    _, body = sign_tx(CAS, WORK, "move", b["key_file"], [cas_coin], [f"{g['owner']}:{funds - FEE}"], FEE)
    accepted(api, body, "b's coins to g")
    # b holds nothing now: its second vote, signed first by b and paid for by g, finds b's ballot spent.
    cas_coin, funds = coin_of(apis[2], g["owner"])
    _, body = sign_tx(CAS, WORK, "vote-b-again", b["key_file"], [cas_coin], [f"{g['owner']}:{funds - FEE}"], FEE,
                      extra=["--key", g["key_file"], "--proposal", raise_fee, "--choice", "no"],
                      command=("gov", "vote"))
    refused(apis[2], body, "already_voted", "b's second vote after moving its coins")
    # g votes with what it held at the snapshot (its genesis allocation), not with b's coins it holds now.
    before = proposal_on(api, raise_fee)
    _, body = vote("vote-g", g, apis[2], raise_fee, "no")
    accepted(apis[2], body, "g's vote")
    after = proposal_on(api, raise_fee)
    g_weight = int(after["no"]) - int(before["no"])
    status, held = http("GET", f"{api}/v1/accounts/{g['owner']}/balance")
    g_now = next(int(x["amount"]) for x in held["balances"] if x["asset"] == "00" * 32)
    check(g_weight == GENESIS_AMOUNT and g_now > GENESIS_AMOUNT,
          f"g voted {g_weight}, its snapshot holding {GENESIS_AMOUNT}, though it holds {g_now} now")
    _, body = vote("vote-text", h, apis[1], text, "yes")
    accepted(apis[1], body, "h's vote on its text")

    # 3. The tally at the windows' end, the same on every node.
    wait_for("the windows' end", lambda: all(height(x) > end + 1 for x in apis), 120)
    tallies = [proposal_on(x, raise_fee) for x in apis]
    for field in ("status", "ballots", "yes", "no", "end", "snapshot"):
        check(len({t[field] for t in tallies}) == 1, f"the nodes disagree on {field}: {tallies}")
    check(tallies[0]["status"] == "passed", f"the fee proposal passed: {tallies[0]}")
    texts = [proposal_on(x, text) for x in apis]
    check(all(t["status"] == "failed" for t in texts), f"the text resolution failed its quorum: {texts}")
    print(f"tally: fee proposal {tallies[0]['yes']} yes, {tallies[0]['no']} no of {tallies[0]['ballots']} ballots")
    refused(api, vote("vote-late", f, api, raise_fee, "yes")[1], "voting_closed", "a vote after the window")

    # 4. From the change's height on, every node's rules ask the new minimum fee.
    wait_for("the change's height", lambda: all(height(x) >= effective_at for x in apis), 120)
    payer.stopping = True
    payer.join()
    for x in apis:
        status, answer = http("GET", f"{x}/v1/proposals")
        check(answer["params"]["min_fee"] == NEW_MIN_FEE, f"{x}: the minimum fee in force: {answer['params']}")
    refused(apis[1], paying("old-fee", f, apis[1], ("tx",), [])[1], "fee_too_low", "a payment at the old fee")
    accepted(apis[2], paying("new-fee", f, apis[2], ("tx",), [], fee=NEW_MIN_FEE)[1], "a payment at the new fee")
    print("governance: all checks passed")
finally:
    if payer is not None:
        payer.stopping = True
    cluster_run.stop()
