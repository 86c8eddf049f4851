// expect: refused loop_variable
function main() { for (let i = 0; i < 3; j++) { } return 0; }
