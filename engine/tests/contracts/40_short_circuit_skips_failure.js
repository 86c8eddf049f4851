// expect: ok 0
function main() { let z = 0; return z != 0 && 10 / z > 1; }
