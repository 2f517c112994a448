//! Generates the pprof messages (src/output/pprof/profile.proto) with prost, compiling the
//! .proto with protox so that no protoc binary is needed.
fn main() {
    let proto = "src/output/pprof/profile.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors =
        protox::compile([proto], ["src/output/pprof"]).unwrap_or_else(|e| panic!("{proto}: {e}"));
    prost_build::Config::new()
        .compile_fds(descriptors)
        .unwrap_or_else(|e| panic!("generating the pprof messages: {e}"));
}
