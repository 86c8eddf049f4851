// expect: failed require
function main() {
  transfer("bob", 10);
  require(0, "no");
  return 1;
}
