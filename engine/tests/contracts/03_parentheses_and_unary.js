// expect: ok -20
function main() { return -(2 + 3) * 4; }
