// expect: refused redefined
function transfer(to, amount) { return 0; }
function main() { return 1; }
