// expect: refused unknown_function
function fact(n) { if (n < 2) { return 1; } return n * fact(n - 1); }
function main() { return fact(5); }
