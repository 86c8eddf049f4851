// expect: failed bad_amount
function main() { transfer("bob", 0); return 0; }
