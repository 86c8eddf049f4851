// expect: ok 1
function main() { require(balance("contract") >= 100, "underfunded"); return 1; }
