// expect: refused parse
function main() { let n = 10; let s = 0; for (let i = 0; i < n; i++) { s = s + 1; } return s; }
