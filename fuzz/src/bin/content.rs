//! Fuzz target `content`: see `postern_gateway::fuzzing::content` for the property it checks.

fn main() {
    afl::fuzz!(|input: &[u8]| postern_gateway::fuzzing::content(input));
}
