// expect: refused redeclared
function main() { let x = 1; let x = 2; return x; }
