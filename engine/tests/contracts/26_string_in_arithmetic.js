// expect: failed type
function main() { return "a" + 1; }
