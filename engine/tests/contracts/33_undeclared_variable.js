// expect: refused unknown_variable
function main() { y = 3; return y; }
