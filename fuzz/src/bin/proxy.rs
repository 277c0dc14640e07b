//! Fuzz target `proxy`: see `postern_gateway::fuzzing::proxy` for the property it checks.

fn main() {
    // Before the fork server: every child starts with the gateway built.
    postern_gateway::fuzzing::init();
    afl::fuzz!(|input: &[u8]| postern_gateway::fuzzing::proxy(input));
}
