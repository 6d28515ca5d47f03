//! Compiles `proto/` into the tonic client and server under `src/rpc/`,
//! with the protoc that `protoc-bin-vendored` ships, so that a build needs
//! no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Edition 2021: set_var is safe; the build script is single-threaded.
    std::env::set_var("PROTOC", protoc);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Record data stays `Bytes` end to end: no copy per message.
        .bytes(".runnel.v1.FetchedPartition.records")
        .compile_protos(&["proto/runnel.proto"], &["proto"])?;
    Ok(())
}
