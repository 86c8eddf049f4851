// expect: failed insufficient_funds
function main() { transfer("bob", 60); transfer("bob", 41); return 0; }
