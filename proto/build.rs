//! Compiles the `.proto` files with `protox` (a pure-Rust protobuf compiler), so building the
//! workspace needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/broker/v1/common.proto",
        "proto/broker/v1/broker.proto",
        "proto/broker/v1/groups.proto",
        "proto/broker/v1/auth.proto",
        "proto/raft/v1/raft.proto",
        "proto/cluster/v1/cluster.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .bytes(".")
        .codec_path("crate::codec::SizedProstCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
