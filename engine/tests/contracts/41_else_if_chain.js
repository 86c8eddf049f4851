// expect: ok 3
function main() {
  let n = 12;
  if (n < 5) { return 1; } else if (n < 10) { return 2; } else if (n < 20) { return 3; }
  return 4;
}
