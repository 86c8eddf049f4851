// expect: refused unknown_function
function a(n) { return b(n); }
function b(n) { return a(n); }
function main() { return a(1); }
