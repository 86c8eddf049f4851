// expect: ok 42
function main() { return 42; }
