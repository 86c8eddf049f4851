// expect: refused over_budget
// Nested loops of 1000 turns each: at most a million operations and more, over the 100,000 budget; refused before
// the first transfer runs.
function main() {
  transfer("bob", 1);
  let n = 0;
  for (let i = 0; i < 1000; i++) {
    for (let j = 0; j < 1000; j++) { n = n + 1; }
  }
  return n;
}
