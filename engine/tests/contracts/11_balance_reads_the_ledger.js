// expect: ok 150
function main() { return balance("contract") + balance("alice"); }
