// expect: failed overflow
function main() {
  let x = 1;
  for (let i = 0; i < 200; i++) { x = x * 2; }
  return x;
}
