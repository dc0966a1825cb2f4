//! Regenerates the etcd gRPC bindings of the vendored etcd-client from its
//! `.proto` files, the same way the upstream build script does, but with
//! protox instead of a system `protoc`, into files that are committed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let proto = root.join("proto");
    let out = root.join("src/rpc/generated");
    std::fs::create_dir_all(&out)?;
    let files = [
        "etcd/api/authpb/auth.proto",
        "etcd/api/etcdserverpb/rpc.proto",
        "etcd/api/mvccpb/kv.proto",
        "etcd/server/etcdserver/api/v3election/v3electionpb/v3election.proto",
        "etcd/server/etcdserver/api/v3lock/v3lockpb/v3lock.proto",
    ];
    let fds = protox::compile(files, [&proto])?;
    tonic_prost_build::configure()
        .build_server(false)
        .out_dir(&out)
        .compile_fds(fds)?;
    // Imports that only carry annotations (google.api, the OpenAPI options)
    // come out as modules of their own; the client uses none of them.
    for entry in std::fs::read_dir(&out)? {
        let path = entry?.path();
        let keep = ["authpb.rs", "etcdserverpb.rs", "mvccpb.rs", "v3electionpb.rs", "v3lockpb.rs"];
        if !keep.iter().any(|name| path.ends_with(name)) {
            std::fs::remove_file(&path)?;
        }
    }
    println!("wrote {}", out.display());
    Ok(())
}
