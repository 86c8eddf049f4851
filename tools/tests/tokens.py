#!/usr/bin/env python3
"""Tokens and the DEX on a real cluster, through `cas token`, `cas order` and the HTTP API (issue 20).

Usage: tokens.py CAS_BINARY WORK_DIR

Starts `cas local --serve --business` (4 nodes on protocol version 4, which admits business transactions). Account a issues GOLD (max 1,000,000: 600,000 to itself, 100,000 offered at
3 CAS, 300,000 mint rights); b buys 1,000 from the offer; c bids for 2,000 at 4; a and d both fill that bid from
its one place, submitted together to two nodes: exactly one fill is accepted and the other is refused in block
order, the same on every node; a mints 10,000 to d; b approves d, which moves part of it to c (over-allowance and a
wrong spender refused with their codes); c deploys a contract, funds it, and a calls it (`cas contract`). Then every node answers the same balances, objects and token supply at
one height, GOLD plus its unspent mint rights is the maximum supply, and b's ERC-20 events (Transfer, Approval)
come out of the block stream filtered by asset and owner. Exits non-zero with a message on the first thing that is not as it must be.
"""

import json
import os
import subprocess
import sys
import threading
import urllib.request

from harness import Cluster, check, http, sign_tx, wait_for

CAS, WORK = sys.argv[1], sys.argv[2]
FEE = 10
CAS_ASSET = "00" * 32
MAX_SUPPLY = 1_000_000
FEE_BPS = 10  # the genesis default


def matching_fee(notional):
    return notional * FEE_BPS // 10_000


def sign(name, who, command, inputs, outputs, extra=()):
    return sign_tx(CAS, WORK, name, who["key_file"], inputs, outputs, FEE, extra=extra, command=command)


def submit(api, body):
    status, answer = http("POST", f"{api}/v1/tx?wait=final&timeout_ms=30000", body)
    check(status == 200 and answer.get("status") == "final", f"submit: {status} {answer}")
    return answer


def accepted(api, body, what):
    answer = submit(api, body)
    check(answer["rejection"] is None, f"{what} was refused: {answer}")
    return answer


def refused(api, body, code, what):
    answer = submit(api, body)
    check((answer["rejection"] or {}).get("code_name") == code, f"{what}: expected {code}, got {answer}")


def coins(api, owner, asset):
    """The owner's plain coins of `asset`, largest first: [("tx:index", amount)]."""
    status, utxos = http("GET", f"{api}/v1/accounts/{owner}/utxos")
    check(status == 200, f"utxos of {owner}: {status} {utxos}")
    found = [(f"{u['tx']}:{u['index']}", int(u["amount"])) for u in utxos["utxos"]
             if u["asset"] == asset and not u.get("unlock_height")]
    return sorted(found, key=lambda c: -c[1])


def coin(api, owner, asset):
    found = coins(api, owner, asset)
    check(found, f"{owner} holds no {asset}")
    return found[0]


def objects(api, owner):
    status, answer = http("GET", f"{api}/v1/accounts/{owner}/objects")
    check(status == 200, f"objects of {owner}: {status} {answer}")
    return answer


def balance(api, owner, asset, height=None):
    query = f"?height={height}" if height is not None else ""
    status, answer = http("GET", f"{api}/v1/accounts/{owner}/balance{query}")
    check(status == 200, f"balance of {owner}: {status} {answer}")
    return next((int(b["amount"]) for b in answer["balances"] if b["asset"] == asset), 0)


cluster_run = Cluster(CAS, os.path.join(WORK, "cluster"), extra=["--business"])
try:
    cluster = cluster_run.wait_ready()
    apis = [n["api"] for n in cluster["nodes"]]
    a, b, c, d = cluster["accounts"][:4]
    api = apis[0]

    # 1. a issues GOLD (`cas token issue` prints the tx id, then the asset id).
    cas_coin, funds = coin(api, a["owner"], CAS_ASSET)
    out = os.path.join(WORK, "issue.bin")
    printed = subprocess.run(
        [CAS, "token", "issue", "--key", a["key_file"], "--chain-id", "1", "--fee", str(FEE), "--out", out,
         "--input", cas_coin, "--output", f"{a['owner']}:600000:new", "--output", f"{a['owner']}:300000:new-rights",
         "--output", f"{a['owner']}:{funds - FEE}", "--nonce", "1", "--name", "Gold", "--symbol", "GOLD",
         "--decimals", "6", "--max-supply", str(MAX_SUPPLY), "--offered", "100000", "--price", "3",
         "--mint-authority", a["owner"]], check=True, capture_output=True, text=True).stdout.split()
    gold = printed[1]
    accepted(api, open(out, "rb").read(), "the issue")
    status, token = http("GET", f"{apis[1]}/v1/tokens/{gold}")
    check(status == 200 and token["total_supply"] == "700000" and token["mint_rights"] == "300000"
          and token["max_supply"] == str(MAX_SUPPLY) and token["issuer"] == a["owner"], f"the token: {token}")
    offer = objects(api, a["owner"])["orders"]
    check(len(offer) == 1 and offer[0]["side"] == "sell" and offer[0]["escrow"] == "100000", f"the offer: {offer}")
    _, again = sign("issue-again", a, ("token", "issue"), [coin(api, a["owner"], CAS_ASSET)[0]],
                    [f"{a['owner']}:1:new", f"{a['owner']}:{coin(api, a['owner'], CAS_ASSET)[1] - FEE}"],
                    ["--nonce", "1", "--name", "Gold", "--symbol", "GOLD", "--max-supply", "1"])
    refused(api, again, "token_exists", "a second issue with the same nonce")

    # 2. b buys 1,000 from the offer at 3: 3,000 and a fee of 3 from each side.
    cas_coin, funds = coin(apis[1], b["owner"], CAS_ASSET)
    fee = matching_fee(3000)
    _, buy = sign("buy", b, ("token", "buy"), [cas_coin],
                  [f"{a['owner']}:{3000 - fee}", f"{b['owner']}:1000:{gold}",
                   f"{b['owner']}:{funds - 3000 - fee - FEE}"],
                  ["--offer", offer[0]["place"], "--amount", "1000"])
    bought = accepted(apis[1], buy, "the buy")
    check(balance(apis[2], b["owner"], gold) == 1000, "b holds its 1,000 GOLD")

    # 3. c bids for 2,000 at 4: it escrows 8,000 and its fee of 8.
    cas_coin, funds = coin(apis[2], c["owner"], CAS_ASSET)
    _, bid = sign("bid", c, ("order", "place"), [cas_coin], [f"{c['owner']}:{funds - 8008 - FEE}"],
                  ["--token", gold, "--side", "buy", "--amount", "2000", "--price", "4"])
    accepted(apis[2], bid, "the bid")
    bids = objects(apis[3], c["owner"])["orders"]
    check(len(bids) == 1 and bids[0]["escrow"] == "8008" and bids[0]["side"] == "buy", f"the bid: {bids}")

    # 4. b hands d 500 GOLD; then a and d fill the bid from its one place at once, through two nodes.
    gold_coin, held = coin(apis[1], b["owner"], gold)
    cas_coin, funds = coin(apis[1], b["owner"], CAS_ASSET)
    _, hand = sign("hand", b, ("tx",), [gold_coin, cas_coin],
                   [f"{d['owner']}:500:{gold}", f"{b['owner']}:{held - 500}:{gold}", f"{b['owner']}:{funds - FEE}"])
    accepted(apis[1], hand, "b's transfer to d")

    def fill(name, who, amount, node):
        gold_coin, held = coin(node, who["owner"], gold)
        cas_coin, funds = coin(node, who["owner"], CAS_ASSET)
        fee = matching_fee(amount * 4)
        return sign(name, who, ("order", "fill"), [gold_coin, cas_coin],
                    [f"{c['owner']}:{amount}:{gold}", f"{who['owner']}:{held - amount}:{gold}",
                     f"{who['owner']}:{funds + amount * 4 - fee - FEE}"],
                    ["--order", bids[0]["place"], "--amount", str(amount)])

    fills = [fill("fill-a", a, 1500, apis[0]), fill("fill-d", d, 400, apis[3])]
    answers = [None, None]

    def race(i, node):
        answers[i] = submit(node, fills[i][1])

    racers = [threading.Thread(target=race, args=(0, apis[0])), threading.Thread(target=race, args=(1, apis[3]))]
    [t.start() for t in racers]
    [t.join() for t in racers]
    winners = [i for i in (0, 1) if answers[i]["rejection"] is None]
    check(len(winners) == 1, f"exactly one fill of the one place is accepted: {answers}")
    loser = answers[1 - winners[0]]["rejection"]["code_name"]
    check(loser in ("double_spend", "missing_input"), f"the other fill is refused as spent: {answers}")
    won = winners[0]
    filled = [1500, 400][won]
    print(f"fill race: {['a', 'd'][won]} filled {filled}, the other was refused: {loser}")
    # The verdict is the ledger's, the same on every node, once that node has executed the block (the answer came
    # from the node the fill was sent to; another may be a block behind when asked at once).
    def final_on(node, tx):
        def probe():
            status, answer = http("GET", f"{node}/v1/tx/{tx}")
            return answer if status == 200 and answer.get("status") == "final" else None
        return wait_for(f"{tx} final on {node}", probe, seconds=30)

    for node in apis:
        answer = final_on(node, fills[won][0])
        check(answer.get("rejection") is None, f"{node}: the winning fill {answer}")
        answer = final_on(node, fills[1 - won][0])
        check((answer.get("rejection") or {}).get("code_name") == loser, f"{node}: the losing fill {answer}")

    # 5. a mints 10,000 to d out of its rights.
    rights = [u for u in http("GET", f"{api}/v1/accounts/{a['owner']}/utxos")[1]["utxos"]
              if u["asset"] not in (CAS_ASSET, gold)]
    check(len(rights) == 1 and rights[0]["amount"] == 300000, f"a's mint rights: {rights}")
    cas_coin, funds = coin(api, a["owner"], CAS_ASSET)
    _, mint = sign("mint", a, ("token", "mint"), [f"{rights[0]['tx']}:{rights[0]['index']}", cas_coin],
                   [f"{d['owner']}:10000:{gold}", f"{a['owner']}:290000:rights-{gold}",
                    f"{a['owner']}:{funds - FEE}"], ["--token", gold])
    accepted(api, mint, "the mint")

    # 6. b approves d for 300; d moves 200 to c; more than the rest, or c as spender, are refused.
    gold_coin, held = coin(apis[1], b["owner"], gold)
    cas_coin, funds = coin(apis[1], b["owner"], CAS_ASSET)
    status, ledger_now = http("GET", f"{apis[1]}/v1/tokens/{gold}")
    _, approve = sign("approve", b, ("token", "approve"), [gold_coin, cas_coin],
                      [f"{b['owner']}:{held - 300}:{gold}", f"{b['owner']}:{funds - FEE}"],
                      ["--token", gold, "--spender", d["owner"], "--amount", "300",
                       "--expires-at", str(ledger_now["height"] + 1000)])
    accepted(apis[1], approve, "the approve")
    check(balance(apis[1], b["owner"], gold) == held, "approving moves nothing out of b's balance")
    allowance = objects(apis[3], d["owner"])["allowances"]
    check(len(allowance) == 1 and allowance[0]["amount"] == "300" and allowance[0]["owner"] == b["owner"],
          f"d's allowance: {allowance}")

    def transfer_from(name, spender, amount, node):
        cas_coin, funds = coin(node, spender["owner"], CAS_ASSET)
        place = objects(node, d["owner"])["allowances"][0]["place"]
        return sign(name, spender, ("token", "transfer-from"), [cas_coin],
                    [f"{c['owner']}:{amount}:{gold}", f"{spender['owner']}:{funds - FEE}"],
                    ["--allowance", place, "--from", b["owner"], "--amount", str(amount)])

    accepted(apis[3], transfer_from("from-1", d, 200, apis[3])[1], "the transfer-from")
    refused(apis[3], transfer_from("from-2", d, 101, apis[3])[1], "allowance_exceeded", "over the allowance")
    refused(apis[2], transfer_from("from-3", c, 50, apis[2])[1], "wrong_spender", "c as d's spender")

    # 6b. A contract: c deploys a splitter, funds it with 250 CAS, a calls it: 60 to a, 40 to b, 150 stay.
    code = os.path.join(WORK, "splitter.js")
    open(code, "w").write('function split(x, y) { require(balance("contract") >= 100, "underfunded"); '
                          'transfer(x, 60); transfer(y, 40); return 1; }\n')
    cas_coin, funds = coin(apis[2], c["owner"], CAS_ASSET)
    out = os.path.join(WORK, "deploy.bin")
    printed = subprocess.run([CAS, "contract", "deploy", "--key", c["key_file"], "--chain-id", "1", "--fee", str(FEE),
                              "--out", out, "--input", cas_coin, "--output", f"{c['owner']}:{funds - FEE}",
                              "--code", code], check=True, capture_output=True, text=True).stdout.split()
    contract = printed[1]
    accepted(apis[2], open(out, "rb").read(), "the deploy")
    cas_coin, funds = coin(apis[2], c["owner"], CAS_ASSET)
    fund_id, fund = sign("fund", c, ("tx",), [cas_coin], [f"{contract}:250", f"{c['owner']}:{funds - 250 - FEE}"])
    accepted(apis[2], fund, "the funding")
    cas_coin, funds = coin(api, a["owner"], CAS_ASSET)
    before = (balance(apis[1], a["owner"], CAS_ASSET), balance(apis[1], b["owner"], CAS_ASSET))
    _, split = sign("split", a, ("contract", "call"), [f"{fund_id}:0", cas_coin], [f"{a['owner']}:{funds - FEE}"],
                    ["--contract", contract, "--code", code, "--function", "split", "--arg", a["owner"],
                     "--arg", b["owner"]])
    accepted(api, split, "the call")
    after = (balance(apis[1], a["owner"], CAS_ASSET), balance(apis[1], b["owner"], CAS_ASSET))
    check(after == (before[0] + 60 - FEE, before[1] + 40), f"the split paid 60 and 40: {before} -> {after}")
    check(balance(apis[3], contract, CAS_ASSET) == 150, "the contract keeps 150")

    # 7. b's GOLD events, from the block stream filtered by asset and owner (what a wallet or an exchange reads).
    status, now = http("GET", f"{apis[2]}/v1/tokens/{gold}")
    seen = []
    with urllib.request.urlopen(f"{apis[2]}/v1/blocks?from=1&asset={gold}&owner={b['owner']}", timeout=30) as stream:
        for line in stream:
            block = json.loads(line)
            for tx in block["txs"]:
                seen += [e for e in tx["events"] if b["owner"] in (e.get("from"), e.get("to"), e.get("owner"))]
            if block["height"] >= now["height"]:
                break
    wanted = [
        {"event": "Transfer", "asset": gold, "from": a["owner"], "to": b["owner"], "value": "1000"},
        {"event": "Transfer", "asset": gold, "from": b["owner"], "to": d["owner"], "value": "500"},
        {"event": "Approval", "asset": gold, "owner": b["owner"], "spender": d["owner"], "value": "300"},
        {"event": "Transfer", "asset": gold, "from": b["owner"], "to": c["owner"], "value": "200"},
    ]
    check(seen == wanted, f"b's GOLD events: {seen}")

    # 8. Every node answers the same at one height; every GOLD is accounted for.
    status, last = http("GET", f"{api}/v1/tokens/{gold}")
    height = last["height"]
    wait_for("every node at the same height", lambda: all(
        http("GET", f"{n}/v1/tokens/{gold}")[1]["height"] >= height for n in apis), 60)
    views = []
    for node in apis:
        view = {who["owner"]: balance(node, who["owner"], gold, height) for who in (a, b, c, d)}
        view["objects"] = [objects(node, who["owner"]) for who in (a, b, c, d)]
        for o in view["objects"]:
            o.pop("height")
        status, token = http("GET", f"{node}/v1/tokens/{gold}")
        view["supply"] = (token["total_supply"], token["mint_rights"])
        views.append(view)
    check(all(v == views[0] for v in views), f"the nodes differ: {views}")
    total, rights_left = (int(x) for x in views[0]["supply"])
    check(total + rights_left == MAX_SUPPLY, f"GOLD {total} + rights {rights_left} != {MAX_SUPPLY}")
    check(total == 710_000, f"600,000 + the offer + 10,000 minted: {total}")
    expected_c = filled + 200
    check(views[0][c["owner"]] == expected_c, f"c holds what it bought and was sent: {views[0][c['owner']]}")
    print(f"tokens: GOLD supply {total} + rights {rights_left}; identical on {len(apis)} nodes at height {height}")
    print("tokens: all checks passed")
finally:
    cluster_run.stop()
