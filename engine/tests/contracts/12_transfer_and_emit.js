// expect: ok 60
// transfers: bob=40
// events: paid=40
function main() {
  transfer("bob", 40);
  emit("paid", 40);
  return balance("contract");
}
