// expect: ok 45
function main() { let s = 0; for (let k = 5; k < 10; k++) { s = s + k; } return s - 0 + 10; }
