//! Fuzz target `data`: see `postern_gateway::fuzzing::data` for the property it checks.

fn main() {
    afl::fuzz!(|input: &[u8]| postern_gateway::fuzzing::data(input));
}
