// expect: ok 77
function main() { return now(); }
