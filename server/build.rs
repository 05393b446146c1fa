//! Generates the gRPC code from `proto/portcullis/v1/gate.proto` with a vendored `protoc`
//! (no system protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto/portcullis/v1/gate.proto");
    tonic_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/portcullis/v1/gate.proto"], &["proto"])?;
    Ok(())
}
