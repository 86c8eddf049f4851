// expect: ok 36
function square(x) { return x * x; }
function main() { return square(6); }
