// expect: ok 14
function main() { return 2 + 3 * 4; }
