// expect: refused parse
function main() { return 1.5; }
