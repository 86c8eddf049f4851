// expect: ok 1
function main() { return (3 < 4) && !(2 >= 5) && (1 != 2) || 0; }
