// expect: failed division_by_zero
function main() { let z = 0; return 5 / z; }
