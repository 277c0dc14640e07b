//! Fuzz target `config`: see `postern_gateway::fuzzing::config` for the property it checks.

fn main() {
    afl::fuzz!(|input: &[u8]| postern_gateway::fuzzing::config(input));
}
