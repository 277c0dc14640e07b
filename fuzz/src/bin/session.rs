//! Fuzz target `session`: see `postern_gateway::fuzzing::session` for the property it checks.

fn main() {
    afl::fuzz!(|input: &[u8]| postern_gateway::fuzzing::session(input));
}
