// expect: ok 1
function pick(who) { if (who == "alice") { return 1; } return 0; }
function main() { return pick("alice"); }
