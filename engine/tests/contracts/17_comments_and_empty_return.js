// expect: ok
/* a block comment */
function main() {
  // nothing to do
  return;
}
