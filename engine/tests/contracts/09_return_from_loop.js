// expect: ok 7
function main() {
  for (let i = 0; i < 50; i++) {
    if (i * i > 40) { return i; }
  }
  return 0;
}
