//! The contract language's corpus (issue 20): every script in tests/contracts/ runs against the same small ledger
//! and must end as its first line says: `// expect: ok [value]` (with its `// transfers:` and `// events:` lines,
//! when given, exactly the call's effects), `// expect: refused <kind>` (refused before it runs: parse or static
//! checks, or over the budget) or `// expect: failed <kind>` (it ran and failed: no effects at all).

use std::collections::HashMap;

use cas_engine::contract::{CallError, Host, Script, Value, DEFAULT_BUDGET};

struct Ledger {
    balances: HashMap<&'static str, i128>,
}

impl Host for Ledger {
    fn contract_account(&self) -> &str {
        "contract"
    }
    fn balance(&self, account: &str) -> i128 {
        self.balances.get(account).copied().unwrap_or(0)
    }
    fn height(&self) -> u64 {
        77
    }
}

fn pairs(line: &str) -> Vec<(String, i128)> {
    line.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (name, value) = p.trim().split_once('=').expect("name=value");
            (name.to_string(), value.parse().expect("an integer"))
        })
        .collect()
}

/// Runs one script; returns what it did, as the corpus's expectation line says it.
fn outcome(source: &str, ledger: &Ledger) -> (String, Option<cas_engine::contract::Effects>) {
    let script = match Script::parse(source) {
        Ok(script) => script,
        Err(error) => return (format!("refused {}", CallError::from(error).kind()), None),
    };
    match script.call("main", Vec::new(), DEFAULT_BUDGET, ledger) {
        Ok(effects) => {
            let shown = match &effects.returned {
                None => "ok".to_string(),
                Some(Value::Int(n)) => format!("ok {n}"),
                Some(Value::Str(s)) => format!("ok \"{s}\""),
            };
            (shown, Some(effects))
        }
        Err(error @ CallError::Refused(_)) => (format!("refused {}", error.kind()), None),
        Err(error) => (format!("failed {}", error.kind()), None),
    }
}

#[test]
fn every_script_of_the_corpus_ends_as_it_says() {
    let ledger = Ledger {
        balances: HashMap::from([("contract", 100), ("alice", 50)]),
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/contracts");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    let (mut valid, mut invalid) = (0, 0);
    for path in &paths {
        let source = std::fs::read_to_string(path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy();
        let header = |tag: &str| {
            source
                .lines()
                .find_map(|l| l.strip_prefix(&format!("// {tag}:")))
                .map(str::trim)
        };
        let expected = header("expect").unwrap_or_else(|| panic!("{name}: no expect line"));
        let (got, effects) = outcome(&source, &ledger);
        assert_eq!(got, expected, "{name}");
        match effects {
            Some(effects) => {
                valid += 1;
                assert_eq!(
                    effects.transfers,
                    header("transfers").map_or_else(Vec::new, pairs),
                    "{name}: transfers"
                );
                assert_eq!(
                    effects.events,
                    header("events").map_or_else(Vec::new, pairs),
                    "{name}: events"
                );
                let script = Script::parse(&source).unwrap();
                assert!(
                    effects.operations <= script.cost("main").unwrap(),
                    "{name}: {} operations, over its static cost {}",
                    effects.operations,
                    script.cost("main").unwrap()
                );
            }
            None => invalid += 1,
        }
    }
    assert!(paths.len() >= 30, "the corpus has {} scripts", paths.len());
    assert!(
        valid >= 10 && invalid >= 10,
        "{valid} valid, {invalid} invalid"
    );
}

/// A call's budget is checked before it runs: the same script runs under a budget at its cost and is refused
/// under one below it, with no effects either way but the successful call's.
#[test]
fn the_budget_is_checked_before_the_call_runs() {
    let ledger = Ledger {
        balances: HashMap::from([("contract", 100)]),
    };
    let script = Script::parse(
        "function main() { transfer(\"bob\", 1); let n = 0; for (let i = 0; i < 50; i++) { n = n + i; } return n; }",
    )
    .unwrap();
    let cost = script.cost("main").unwrap();
    let ran = script.call("main", Vec::new(), cost, &ledger).unwrap();
    assert_eq!(ran.returned, Some(Value::Int(1225)));
    assert!(ran.operations <= cost);
    let refused = script
        .call("main", Vec::new(), cost - 1, &ledger)
        .unwrap_err();
    assert_eq!(refused.kind(), "over_budget");
}

/// Untrusted sources never panic the parser: random bytes, deep nesting and long input are refused with a reason.
#[test]
fn hostile_sources_are_refused_with_a_reason() {
    let deep = format!(
        "function main() {{ return {}1{}; }}",
        "(".repeat(100),
        ")".repeat(100)
    );
    assert_eq!(
        outcome(
            &deep,
            &Ledger {
                balances: HashMap::new()
            }
        )
        .0,
        "refused too_deep"
    );
    let chain = format!("function main() {{ return 1{}; }}", "+1".repeat(5_000));
    assert_eq!(
        outcome(
            &chain,
            &Ledger {
                balances: HashMap::new()
            }
        )
        .0,
        "refused expression_too_long"
    );
    // `else if` nests without nesting brackets: a long chain must not take the stack either.
    let chain = format!(
        "function main() {{ if (0) {{ }}{} return 1; }}",
        " else if (0) { }".repeat(100)
    );
    let refused = outcome(
        &chain,
        &Ledger {
            balances: HashMap::new(),
        },
    )
    .0;
    assert_eq!(refused, "refused too_deep");
    let long = format!("function main() {{ return 1; }}{}", " ".repeat(20_000));
    assert_eq!(
        outcome(
            &long,
            &Ledger {
                balances: HashMap::new()
            }
        )
        .0,
        "refused too_large"
    );
    let mut seed = 7u64;
    for _ in 0..2_000 {
        let len = (seed % 64) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                b"function main(){}();letfor=+-*/<>!&|\"0123456789 xi"[(seed >> 33) as usize % 49]
            })
            .collect();
        let source = String::from_utf8(bytes).unwrap();
        let _ = outcome(
            &source,
            &Ledger {
                balances: HashMap::new(),
            },
        );
    }
}
