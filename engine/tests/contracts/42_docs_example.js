// expect: ok 3
// transfers: holder=10,holder=10,holder=10
// events: paid=10,paid=10,paid=10
// The example of docs/contracts.md.
// Pays each of the first three holders 10, if the contract can.
function pay(to) { transfer(to, 10); emit("paid", 10); return 1; }
function main() {
  require(balance("contract") >= 30, "underfunded");
  let paid = 0;
  for (let i = 0; i < 3; i++) { paid = paid + pay("holder"); }
  return paid;
}
