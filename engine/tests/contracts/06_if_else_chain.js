// expect: ok 2
function grade(n) {
  if (n > 90) { return 3; } else if (n > 50) { return 2; } else { return 1; }
}
function main() { return grade(70); }
