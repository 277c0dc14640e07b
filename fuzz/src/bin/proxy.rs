//! Fuzz target `proxy`: see `postern_gateway::fuzzing::proxy` for the property it checks.

fn main() {
    afl::fuzz!(|input: &[u8]| postern_gateway::fuzzing::proxy(input));
}
