// expect: refused loop_bounds
function main() { let s = 0; for (let i = 0; i < 1000000; i++) { s = s + 1; } return s; }
