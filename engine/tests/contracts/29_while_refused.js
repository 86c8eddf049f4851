// expect: refused parse
function main() { let i = 0; while (i < 10) { i = i + 1; } return i; }
