// expect: refused loop_variable_assigned
function main() { for (let i = 0; i < 10; i++) { i = 0; } return 1; }
