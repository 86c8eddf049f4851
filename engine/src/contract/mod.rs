//! The contract language (issue 20; the whitepaper's Policies are contracts): a small JavaScript-like language that is
//! not Turing complete, so every call's cost is known before it runs.
//!
//! - **Shape.** A script is a list of `function name(a, b) { ... }`. Statements: `let x = e;`, `x = e;`,
//!   `if (e) { } else { }`, `for (let i = 0; i < 10; i++) { }` (both bounds integer literals, at most
//!   [`LOOP_ITERATIONS_MAX`] turns, the loop variable read-only), `return e;` and calls. Expressions: integer and
//!   string literals, variables, calls, `- !` and `|| && == != < <= > >= + - * / %`, with JavaScript's precedence.
//! - **Values.** Integers (i128, every operation checked: overflow and division by zero fail the call) and string
//!   literals, which only name things (accounts, events, messages); comparisons and `!` give 1 or 0, and a
//!   condition is true when not 0.
//! - **No recursion.** A function may call only host functions and functions defined above it, so the call graph
//!   has no cycle ([`Script::parse`] refuses any other call).
//! - **A budget checked before execution.** [`Script::cost`] is the most operations a function can take (a loop
//!   costs its turns times its body, a call its callee); [`Script::call`] refuses a call over the budget before it
//!   runs, and counts as it goes besides.
//! - **Bounded input.** [`SOURCE_BYTES_MAX`], [`NESTING_MAX`] (checked before parsing) and [`EXPR_OPERATORS_MAX`] keep
//!   every tree the checker and the interpreter walk shallow, whatever the source.
//! - **Atomic and deterministic.** A call reads the ledger through [`Host`] and returns its effects (transfers out
//!   of the contract's account, events) only when it ends without failure; a failure returns none. Nothing in it
//!   reads a clock, a file or a random source: `now()` is the block height.
//!
//! Host functions: `balance(account)`, `transfer(to, amount)` (from the contract's own account; amount > 0 and
//! within its balance less what the call sent already), `emit(name, value)`, `require(condition, message)`,
//! `now()`. Deploy and call transactions, and contract state in outputs, are the ledger's part ([`ledger`]).

pub mod ledger;

use std::collections::BTreeMap;

use pest::iterators::Pair;
use pest::pratt_parser::{Assoc, Op, PrattParser};
use pest::Parser;

/// The largest script accepted, in bytes.
pub const SOURCE_BYTES_MAX: usize = 16 * 1024;
/// Brackets nested deeper than this are refused before parsing (the parser recurses on them).
pub const NESTING_MAX: usize = 32;
/// Operators in one expression (a parenthesized part is an expression of its own): with [`NESTING_MAX`], this bounds
/// the depth of the tree the checker and the interpreter walk.
pub const EXPR_OPERATORS_MAX: usize = 32;
/// Turns one `for` may take.
pub const LOOP_ITERATIONS_MAX: i128 = 1_000;
/// Functions in one script.
pub const FUNCTIONS_MAX: usize = 64;
/// Arguments of one call.
pub const ARGS_MAX: usize = 8;
/// The operation budget a call gets unless its caller gives another.
pub const DEFAULT_BUDGET: u64 = 100_000;
/// Events one call may emit.
pub const EVENTS_MAX: usize = 64;

#[derive(pest_derive::Parser)]
#[grammar = "contract/script.pest"]
struct Grammar;

/// Why a script is refused before it runs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    #[error("the script has {len} bytes, more than {SOURCE_BYTES_MAX}")]
    TooLarge { len: usize },
    #[error("brackets (or `else if` links) nest deeper than {NESTING_MAX}")]
    TooDeep,
    #[error("does not parse: {0}")]
    Parse(String),
    #[error("more than {FUNCTIONS_MAX} functions")]
    TooManyFunctions,
    #[error("function `{0}` is defined twice, or names a host function")]
    Redefined(String),
    #[error("`{caller}` calls `{callee}`, which is not a host function nor defined above it (no recursion)")]
    UnknownFunction { caller: String, callee: String },
    #[error("`{name}` takes {expected} arguments, the call gives {got}")]
    Arity {
        name: String,
        expected: usize,
        got: usize,
    },
    #[error("`{0}` is used before any `let` of it")]
    UnknownVariable(String),
    #[error("`{0}` is declared twice in one function")]
    Redeclared(String),
    #[error("the loop variable `{0}` is assigned in its loop")]
    LoopVariableAssigned(String),
    #[error("a loop over `{var}` runs {turns} times: from 0 to at most {LOOP_ITERATIONS_MAX}")]
    LoopBounds { var: String, turns: i128 },
    #[error("a loop names `{expected}` and then `{got}`")]
    LoopVariable { expected: String, got: String },
    #[error("an expression has more than {EXPR_OPERATORS_MAX} operators")]
    ExpressionTooLong,
    #[error("integer literal {0} is out of range")]
    Literal(String),
    #[error("no function `{0}` to call")]
    NoSuchEntry(String),
    #[error("`{name}` may take {cost} operations, more than the budget of {budget}")]
    OverBudget {
        name: String,
        cost: u64,
        budget: u64,
    },
}

/// Why a call that started failed (it changed nothing).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Refused(#[from] ScriptError),
    #[error("integer overflow")]
    Overflow,
    #[error("division by zero")]
    DivisionByZero,
    #[error("require failed: {0}")]
    Require(String),
    #[error("{0}")]
    Type(String),
    #[error("transfer of {amount}: the contract holds {available}")]
    InsufficientFunds { amount: i128, available: i128 },
    #[error("transfer of {0}: an amount is positive")]
    BadAmount(i128),
    #[error("more than {EVENTS_MAX} events")]
    TooManyEvents,
    #[error("the call took more than its {0} operations")]
    Budget(u64),
}

impl CallError {
    /// A stable short name of the failure (the contract corpus and receipts name failures by it).
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Refused(error) => match error {
                ScriptError::TooLarge { .. } => "too_large",
                ScriptError::TooDeep => "too_deep",
                ScriptError::Parse(_) => "parse",
                ScriptError::TooManyFunctions => "too_many_functions",
                ScriptError::Redefined(_) => "redefined",
                ScriptError::UnknownFunction { .. } => "unknown_function",
                ScriptError::Arity { .. } => "arity",
                ScriptError::UnknownVariable(_) => "unknown_variable",
                ScriptError::Redeclared(_) => "redeclared",
                ScriptError::LoopVariableAssigned(_) => "loop_variable_assigned",
                ScriptError::LoopBounds { .. } => "loop_bounds",
                ScriptError::LoopVariable { .. } => "loop_variable",
                ScriptError::Literal(_) => "literal",
                ScriptError::ExpressionTooLong => "expression_too_long",
                ScriptError::NoSuchEntry(_) => "no_such_entry",
                ScriptError::OverBudget { .. } => "over_budget",
            },
            CallError::Overflow => "overflow",
            CallError::DivisionByZero => "division_by_zero",
            CallError::Require(_) => "require",
            CallError::Type(_) => "type",
            CallError::InsufficientFunds { .. } => "insufficient_funds",
            CallError::BadAmount(_) => "bad_amount",
            CallError::TooManyEvents => "too_many_events",
            CallError::Budget(_) => "budget",
        }
    }
}

/// A value of the language.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Int(i128),
    Str(String),
}

/// What a call reads from the ledger.
pub trait Host {
    /// The account the contract holds its funds in.
    fn contract_account(&self) -> &str;
    /// An account's balance (0 for one the ledger does not know).
    fn balance(&self, account: &str) -> i128;
    /// The height of the block the call is in.
    fn height(&self) -> u64;
}

/// What a call that ended without failure does, for the ledger to apply as one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// Transfers out of the contract's account, in order.
    pub transfers: Vec<(String, i128)>,
    /// Events, in order.
    pub events: Vec<(String, i128)>,
    /// What the entry function returned.
    pub returned: Option<Value>,
    /// Operations the call took (at most the script's cost of the entry function).
    pub operations: u64,
}

/// Host functions and their argument counts.
const HOST: &[(&str, usize)] = &[
    ("balance", 1),
    ("transfer", 2),
    ("emit", 2),
    ("require", 2),
    ("now", 0),
];

#[derive(Clone, Debug)]
enum Expr {
    Int(i128),
    Str(String),
    Var(String),
    Call(String, Vec<Expr>),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
}

#[derive(Clone, Copy, Debug)]
enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Clone, Debug)]
enum Stmt {
    Let(String, Expr),
    Assign(String, Expr),
    If(Expr, Vec<Stmt>, Vec<Stmt>),
    For {
        var: String,
        from: i128,
        to: i128,
        body: Vec<Stmt>,
    },
    Return(Option<Expr>),
    Call(String, Vec<Expr>),
}

#[derive(Clone, Debug)]
struct Function {
    name: String,
    params: Vec<String>,
    body: Vec<Stmt>,
    /// The most operations a call of it can take.
    cost: u64,
}

/// A parsed and checked script.
#[derive(Clone, Debug)]
pub struct Script {
    functions: Vec<Function>,
}

impl Script {
    /// Parses and checks untrusted source: its size and nesting first, then the grammar, then the rules above
    /// (no recursion, bounded loops, variables declared before use, calls with their argument counts).
    pub fn parse(source: &str) -> Result<Script, ScriptError> {
        if source.len() > SOURCE_BYTES_MAX {
            return Err(ScriptError::TooLarge { len: source.len() });
        }
        let mut depth = 0usize;
        for byte in source.bytes() {
            match byte {
                b'(' | b'{' => {
                    depth += 1;
                    if depth > NESTING_MAX {
                        return Err(ScriptError::TooDeep);
                    }
                }
                b')' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        let program = Grammar::parse(Rule::program, source)
            .map_err(|e| ScriptError::Parse(e.to_string().replace('\n', " ")))?
            .next()
            .expect("a program");
        let mut functions: Vec<Function> = Vec::new();
        for pair in program.into_inner() {
            if pair.as_rule() != Rule::function {
                continue;
            }
            if functions.len() == FUNCTIONS_MAX {
                return Err(ScriptError::TooManyFunctions);
            }
            let mut parts = pair.into_inner();
            let name = parts.next().expect("a name").as_str().to_string();
            let params: Vec<String> = parts
                .next()
                .expect("params")
                .into_inner()
                .map(|p| p.as_str().to_string())
                .collect();
            let body = block(parts.next().expect("a body"))?;
            if functions.iter().any(|f| f.name == name) || HOST.iter().any(|(h, _)| *h == name) {
                return Err(ScriptError::Redefined(name));
            }
            let mut checker = Checker {
                function: &name,
                defined: &functions,
                scopes: vec![params.clone()],
                loop_vars: Vec::new(),
            };
            let cost = checker.block(&body)?;
            functions.push(Function {
                name,
                params,
                body,
                cost,
            });
        }
        Ok(Script { functions })
    }

    /// The most operations a call of `name` can take.
    pub fn cost(&self, name: &str) -> Option<u64> {
        self.function(name).map(|f| f.cost)
    }

    fn function(&self, name: &str) -> Option<&Function> {
        self.functions.iter().find(|f| f.name == name)
    }

    /// Calls `name` with `args` under `budget` operations: refused before it runs when the function may take more,
    /// or its arguments do not fit it; otherwise its effects, or the failure that undid them.
    pub fn call(
        &self,
        name: &str,
        args: Vec<Value>,
        budget: u64,
        host: &dyn Host,
    ) -> Result<Effects, CallError> {
        let function = self
            .function(name)
            .ok_or_else(|| ScriptError::NoSuchEntry(name.to_string()))?;
        if function.cost > budget {
            return Err(ScriptError::OverBudget {
                name: name.to_string(),
                cost: function.cost,
                budget,
            }
            .into());
        }
        if args.len() != function.params.len() {
            return Err(ScriptError::Arity {
                name: name.to_string(),
                expected: function.params.len(),
                got: args.len(),
            }
            .into());
        }
        let mut run = Run {
            script: self,
            host,
            budget,
            effects: Effects::default(),
            sent: 0,
        };
        let returned = run.invoke(function, args)?;
        run.effects.returned = returned;
        Ok(run.effects)
    }
}

fn literal(pair: &Pair<Rule>) -> Result<i128, ScriptError> {
    pair.as_str()
        .parse::<i128>()
        .map_err(|_| ScriptError::Literal(pair.as_str().to_string()))
}

fn block(pair: Pair<Rule>) -> Result<Vec<Stmt>, ScriptError> {
    pair.into_inner().map(|p| stmt(p, 0)).collect()
}

/// One statement; `chained` counts the `else if` links above it, which nest without brackets.
fn stmt(pair: Pair<Rule>, chained: usize) -> Result<Stmt, ScriptError> {
    if chained > NESTING_MAX {
        return Err(ScriptError::TooDeep);
    }
    let rule = pair.as_rule();
    let mut parts = pair.into_inner();
    Ok(match rule {
        Rule::let_stmt => {
            let name = parts.next().expect("a name").as_str().to_string();
            Stmt::Let(name, expr(parts.next().expect("a value"))?)
        }
        Rule::assign_stmt => {
            let name = parts.next().expect("a name").as_str().to_string();
            Stmt::Assign(name, expr(parts.next().expect("a value"))?)
        }
        Rule::if_stmt => {
            let condition = expr(parts.next().expect("a condition"))?;
            let then = block(parts.next().expect("a block"))?;
            let otherwise = match parts.next() {
                None => Vec::new(),
                Some(pair) if pair.as_rule() == Rule::if_stmt => vec![stmt(pair, chained + 1)?],
                Some(pair) => block(pair)?,
            };
            Stmt::If(condition, then, otherwise)
        }
        Rule::for_stmt => {
            let var = parts.next().expect("a variable").as_str().to_string();
            let from = literal(&parts.next().expect("a start"))?;
            let again = parts.next().expect("a variable").as_str().to_string();
            let to = literal(&parts.next().expect("an end"))?;
            let last = parts.next().expect("a variable").as_str().to_string();
            for name in [again, last] {
                if name != var {
                    return Err(ScriptError::LoopVariable {
                        expected: var,
                        got: name,
                    });
                }
            }
            let turns = to - from;
            if !(0..=LOOP_ITERATIONS_MAX).contains(&turns) {
                return Err(ScriptError::LoopBounds { var, turns });
            }
            Stmt::For {
                var,
                from,
                to,
                body: block(parts.next().expect("a body"))?,
            }
        }
        Rule::return_stmt => Stmt::Return(parts.next().map(expr).transpose()?),
        Rule::call_stmt => {
            let (name, args) = call(parts.next().expect("a call"))?;
            Stmt::Call(name, args)
        }
        other => unreachable!("no statement is a {other:?}"),
    })
}

fn call(pair: Pair<Rule>) -> Result<(String, Vec<Expr>), ScriptError> {
    let mut parts = pair.into_inner();
    let name = parts.next().expect("a name").as_str().to_string();
    let args = parts.map(expr).collect::<Result<Vec<_>, _>>()?;
    Ok((name, args))
}

fn pratt() -> PrattParser<Rule> {
    PrattParser::new()
        .op(Op::infix(Rule::or, Assoc::Left))
        .op(Op::infix(Rule::and, Assoc::Left))
        .op(Op::infix(Rule::eq, Assoc::Left) | Op::infix(Rule::ne, Assoc::Left))
        .op(Op::infix(Rule::lt, Assoc::Left)
            | Op::infix(Rule::le, Assoc::Left)
            | Op::infix(Rule::gt, Assoc::Left)
            | Op::infix(Rule::ge, Assoc::Left))
        .op(Op::infix(Rule::add, Assoc::Left) | Op::infix(Rule::sub, Assoc::Left))
        .op(Op::infix(Rule::mul, Assoc::Left)
            | Op::infix(Rule::div, Assoc::Left)
            | Op::infix(Rule::rem, Assoc::Left))
        .op(Op::prefix(Rule::neg) | Op::prefix(Rule::not))
}

fn expr(pair: Pair<Rule>) -> Result<Expr, ScriptError> {
    let operators = pair
        .clone()
        .into_inner()
        .filter(|p| {
            !matches!(
                p.as_rule(),
                Rule::int | Rule::string | Rule::ident | Rule::call | Rule::expr
            )
        })
        .count();
    if operators > EXPR_OPERATORS_MAX {
        return Err(ScriptError::ExpressionTooLong);
    }
    pratt()
        .map_primary(|primary| match primary.as_rule() {
            Rule::int => literal(&primary).map(Expr::Int),
            Rule::string => {
                let text = primary.as_str();
                Ok(Expr::Str(text[1..text.len() - 1].to_string()))
            }
            Rule::ident => Ok(Expr::Var(primary.as_str().to_string())),
            Rule::call => call(primary).map(|(name, args)| Expr::Call(name, args)),
            Rule::expr => expr(primary),
            other => unreachable!("no primary is a {other:?}"),
        })
        .map_prefix(|op, operand| {
            let operand = Box::new(operand?);
            Ok(match op.as_rule() {
                Rule::neg => Expr::Neg(operand),
                _ => Expr::Not(operand),
            })
        })
        .map_infix(|left, op, right| {
            let op = match op.as_rule() {
                Rule::or => BinOp::Or,
                Rule::and => BinOp::And,
                Rule::eq => BinOp::Eq,
                Rule::ne => BinOp::Ne,
                Rule::lt => BinOp::Lt,
                Rule::le => BinOp::Le,
                Rule::gt => BinOp::Gt,
                Rule::ge => BinOp::Ge,
                Rule::add => BinOp::Add,
                Rule::sub => BinOp::Sub,
                Rule::mul => BinOp::Mul,
                Rule::div => BinOp::Div,
                _ => BinOp::Rem,
            };
            Ok(Expr::Binary(op, Box::new(left?), Box::new(right?)))
        })
        .parse(pair.into_inner())
}

/// The static checks of one function, and its cost.
struct Checker<'a> {
    function: &'a str,
    defined: &'a [Function],
    /// Variables in scope, innermost last.
    scopes: Vec<Vec<String>>,
    loop_vars: Vec<String>,
}

impl Checker<'_> {
    fn declared(&self, name: &str) -> bool {
        self.scopes.iter().flatten().any(|v| v == name)
    }

    fn block(&mut self, body: &[Stmt]) -> Result<u64, ScriptError> {
        self.scopes.push(Vec::new());
        let mut cost = 0u64;
        for stmt in body {
            cost = cost.saturating_add(self.stmt(stmt)?);
        }
        self.scopes.pop();
        Ok(cost)
    }

    fn stmt(&mut self, stmt: &Stmt) -> Result<u64, ScriptError> {
        Ok(1u64.saturating_add(match stmt {
            Stmt::Let(name, value) => {
                let cost = self.expr(value)?;
                if self.declared(name) {
                    return Err(ScriptError::Redeclared(name.clone()));
                }
                self.scopes.last_mut().expect("a scope").push(name.clone());
                cost
            }
            Stmt::Assign(name, value) => {
                if self.loop_vars.contains(name) {
                    return Err(ScriptError::LoopVariableAssigned(name.clone()));
                }
                if !self.declared(name) {
                    return Err(ScriptError::UnknownVariable(name.clone()));
                }
                self.expr(value)?
            }
            Stmt::If(condition, then, otherwise) => self
                .expr(condition)?
                .saturating_add(self.block(then)?.max(self.block(otherwise)?)),
            Stmt::For {
                var,
                from,
                to,
                body,
            } => {
                if self.declared(var) {
                    return Err(ScriptError::Redeclared(var.clone()));
                }
                self.scopes.push(vec![var.clone()]);
                self.loop_vars.push(var.clone());
                let turn = self.block(body)?.saturating_add(1);
                self.loop_vars.pop();
                self.scopes.pop();
                turn.saturating_mul((to - from) as u64)
            }
            Stmt::Return(value) => match value {
                Some(value) => self.expr(value)?,
                None => 0,
            },
            Stmt::Call(name, args) => self.call(name, args)?,
        }))
    }

    fn call(&mut self, name: &str, args: &[Expr]) -> Result<u64, ScriptError> {
        let (expected, callee_cost) = match HOST.iter().find(|(h, _)| *h == name) {
            Some((_, arity)) => (*arity, 1),
            None => match self.defined.iter().find(|f| f.name == name) {
                Some(f) => (f.params.len(), f.cost),
                None => {
                    return Err(ScriptError::UnknownFunction {
                        caller: self.function.to_string(),
                        callee: name.to_string(),
                    })
                }
            },
        };
        if args.len() != expected || args.len() > ARGS_MAX {
            return Err(ScriptError::Arity {
                name: name.to_string(),
                expected,
                got: args.len(),
            });
        }
        let mut cost = callee_cost;
        for arg in args {
            cost = cost.saturating_add(self.expr(arg)?);
        }
        Ok(cost)
    }

    fn expr(&mut self, expr: &Expr) -> Result<u64, ScriptError> {
        Ok(1u64.saturating_add(match expr {
            Expr::Int(_) | Expr::Str(_) => 0,
            Expr::Var(name) => {
                if !self.declared(name) {
                    return Err(ScriptError::UnknownVariable(name.clone()));
                }
                0
            }
            Expr::Call(name, args) => self.call(name, args)?,
            Expr::Neg(operand) | Expr::Not(operand) => self.expr(operand)?,
            Expr::Binary(_, left, right) => self.expr(left)?.saturating_add(self.expr(right)?),
        }))
    }
}

/// What a `return` does to the statements after it.
enum Flow {
    Next,
    Return(Option<Value>),
}

/// One call in progress.
struct Run<'a> {
    script: &'a Script,
    host: &'a dyn Host,
    budget: u64,
    effects: Effects,
    /// What the call's transfers sent so far.
    sent: i128,
}

type Env = Vec<BTreeMap<String, Value>>;

impl Run<'_> {
    fn tick(&mut self) -> Result<(), CallError> {
        self.effects.operations += 1;
        if self.effects.operations > self.budget {
            return Err(CallError::Budget(self.budget));
        }
        Ok(())
    }

    fn invoke(
        &mut self,
        function: &Function,
        args: Vec<Value>,
    ) -> Result<Option<Value>, CallError> {
        let frame: BTreeMap<String, Value> = function.params.iter().cloned().zip(args).collect();
        let mut env: Env = vec![frame];
        match self.block(&function.body, &mut env)? {
            Flow::Return(value) => Ok(value),
            Flow::Next => Ok(None),
        }
    }

    fn block(&mut self, body: &[Stmt], env: &mut Env) -> Result<Flow, CallError> {
        env.push(BTreeMap::new());
        let mut flow = Flow::Next;
        for stmt in body {
            flow = self.stmt(stmt, env)?;
            if let Flow::Return(_) = flow {
                break;
            }
        }
        env.pop();
        Ok(flow)
    }

    fn stmt(&mut self, stmt: &Stmt, env: &mut Env) -> Result<Flow, CallError> {
        self.tick()?;
        match stmt {
            Stmt::Let(name, value) => {
                let value = self.expr(value, env)?;
                env.last_mut().expect("a scope").insert(name.clone(), value);
            }
            Stmt::Assign(name, value) => {
                let value = self.expr(value, env)?;
                let slot = env
                    .iter_mut()
                    .rev()
                    .find_map(|scope| scope.get_mut(name))
                    .expect("checked: declared");
                *slot = value;
            }
            Stmt::If(condition, then, otherwise) => {
                let branch = if truth(&self.expr(condition, env)?)? {
                    then
                } else {
                    otherwise
                };
                return self.block(branch, env);
            }
            Stmt::For {
                var,
                from,
                to,
                body,
            } => {
                for i in *from..*to {
                    self.tick()?;
                    env.push(BTreeMap::from([(var.clone(), Value::Int(i))]));
                    let flow = self.block(body, env);
                    env.pop();
                    if let Flow::Return(value) = flow? {
                        return Ok(Flow::Return(value));
                    }
                }
            }
            Stmt::Return(value) => {
                let value = value.as_ref().map(|v| self.expr(v, env)).transpose()?;
                return Ok(Flow::Return(value));
            }
            Stmt::Call(name, args) => {
                self.call(name, args, env)?;
            }
        }
        Ok(Flow::Next)
    }

    fn call(&mut self, name: &str, args: &[Expr], env: &mut Env) -> Result<Value, CallError> {
        let mut values = Vec::with_capacity(args.len());
        for arg in args {
            values.push(self.expr(arg, env)?);
        }
        let script = self.script;
        if let Some(function) = script.function(name) {
            return Ok(self.invoke(function, values)?.unwrap_or(Value::Int(0)));
        }
        self.tick()?;
        let int = |value: &Value, what: &str| match value {
            Value::Int(n) => Ok(*n),
            Value::Str(_) => Err(CallError::Type(format!("{name}: {what} is a string"))),
        };
        let text = |value: &Value, what: &str| match value {
            Value::Str(s) => Ok(s.clone()),
            Value::Int(_) => Err(CallError::Type(format!("{name}: {what} is an integer"))),
        };
        Ok(match name {
            "balance" => {
                let account = text(&values[0], "the account")?;
                let mut balance = self.host.balance(&account);
                if account == self.host.contract_account() {
                    balance -= self.sent;
                }
                for (to, amount) in &self.effects.transfers {
                    if *to == account {
                        balance += amount;
                    }
                }
                Value::Int(balance)
            }
            "transfer" => {
                let to = text(&values[0], "the receiver")?;
                let amount = int(&values[1], "the amount")?;
                if amount <= 0 {
                    return Err(CallError::BadAmount(amount));
                }
                let available = self.host.balance(self.host.contract_account()) - self.sent;
                if amount > available {
                    return Err(CallError::InsufficientFunds { amount, available });
                }
                self.sent += amount;
                self.effects.transfers.push((to, amount));
                Value::Int(0)
            }
            "emit" => {
                let event = text(&values[0], "the event")?;
                let value = int(&values[1], "the value")?;
                if self.effects.events.len() == EVENTS_MAX {
                    return Err(CallError::TooManyEvents);
                }
                self.effects.events.push((event, value));
                Value::Int(0)
            }
            "require" => {
                if !truth(&values[0])? {
                    return Err(CallError::Require(text(&values[1], "the message")?));
                }
                Value::Int(0)
            }
            "now" => Value::Int(i128::from(self.host.height())),
            other => unreachable!("checked: `{other}` is a host function"),
        })
    }

    fn expr(&mut self, expr: &Expr, env: &mut Env) -> Result<Value, CallError> {
        self.tick()?;
        Ok(match expr {
            Expr::Int(n) => Value::Int(*n),
            Expr::Str(s) => Value::Str(s.clone()),
            Expr::Var(name) => env
                .iter()
                .rev()
                .find_map(|scope| scope.get(name))
                .cloned()
                .expect("checked: declared"),
            Expr::Call(name, args) => self.call(name, args, env)?,
            Expr::Neg(operand) => Value::Int(
                integer(&self.expr(operand, env)?)?
                    .checked_neg()
                    .ok_or(CallError::Overflow)?,
            ),
            Expr::Not(operand) => Value::Int(i128::from(!truth(&self.expr(operand, env)?)?)),
            Expr::Binary(BinOp::And, left, right) => {
                let value = truth(&self.expr(left, env)?)? && truth(&self.expr(right, env)?)?;
                Value::Int(i128::from(value))
            }
            Expr::Binary(BinOp::Or, left, right) => {
                let value = truth(&self.expr(left, env)?)? || truth(&self.expr(right, env)?)?;
                Value::Int(i128::from(value))
            }
            Expr::Binary(op, left, right) => {
                let (a, b) = (self.expr(left, env)?, self.expr(right, env)?);
                if let (BinOp::Eq | BinOp::Ne, Value::Str(x), Value::Str(y)) = (op, &a, &b) {
                    return Ok(Value::Int(i128::from((x == y) == matches!(op, BinOp::Eq))));
                }
                let (a, b) = (integer(&a)?, integer(&b)?);
                let flag = |v: bool| Ok(i128::from(v));
                Value::Int(match op {
                    BinOp::Eq => flag(a == b),
                    BinOp::Ne => flag(a != b),
                    BinOp::Lt => flag(a < b),
                    BinOp::Le => flag(a <= b),
                    BinOp::Gt => flag(a > b),
                    BinOp::Ge => flag(a >= b),
                    BinOp::Add => a.checked_add(b).ok_or(CallError::Overflow),
                    BinOp::Sub => a.checked_sub(b).ok_or(CallError::Overflow),
                    BinOp::Mul => a.checked_mul(b).ok_or(CallError::Overflow),
                    BinOp::Div if b == 0 => Err(CallError::DivisionByZero),
                    BinOp::Div => a.checked_div(b).ok_or(CallError::Overflow),
                    BinOp::Rem if b == 0 => Err(CallError::DivisionByZero),
                    BinOp::Rem => a.checked_rem(b).ok_or(CallError::Overflow),
                    BinOp::And | BinOp::Or => unreachable!("short-circuited above"),
                }?)
            }
        })
    }
}

fn integer(value: &Value) -> Result<i128, CallError> {
    match value {
        Value::Int(n) => Ok(*n),
        Value::Str(s) => Err(CallError::Type(format!(
            "the string \"{s}\" in arithmetic (strings only name things)"
        ))),
    }
}

fn truth(value: &Value) -> Result<bool, CallError> {
    Ok(integer(value)? != 0)
}
