//! Fuzz target `session`: see `postern_gateway::fuzzing::session` for the property it checks.

fn main() {
    // Before the fork server: every child starts with the gateway built.
    postern_gateway::fuzzing::init();
    afl::fuzz!(|input: &[u8]| postern_gateway::fuzzing::session(input));
}
