// expect: ok 30
// transfers: bob=10,bob=20
function main() {
  transfer("bob", 10);
  transfer("bob", 20);
  return balance("bob");
}
