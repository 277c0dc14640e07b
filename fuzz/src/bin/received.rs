//! Fuzz target `received`: see `postern_gateway::fuzzing::received` for the property it checks.

fn main() {
    afl::fuzz!(|input: &[u8]| postern_gateway::fuzzing::received(input));
}
