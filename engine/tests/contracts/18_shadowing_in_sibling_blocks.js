// expect: ok 5
function main() {
  let r = 0;
  if (1) { let t = 5; r = t; } else { let t = 6; r = t; }
  return r;
}
