// expect: ok -3
function main() { return -7 / 2 + 7 % 2 - 1; }
