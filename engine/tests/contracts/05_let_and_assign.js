// expect: ok 10
function main() {
  let x = 1;
  x = x + 9;
  return x;
}
