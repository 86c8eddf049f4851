// expect: refused arity
function main() { transfer("bob"); return 0; }
