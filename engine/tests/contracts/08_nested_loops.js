// expect: ok 100
function main() {
  let n = 0;
  for (let i = 0; i < 10; i++) {
    for (let j = 0; j < 10; j++) { n = n + 1; }
  }
  return n;
}
