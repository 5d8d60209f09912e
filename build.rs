//! Generates the gRPC code from proto/ with a protoc shipped inside a crate,
//! so a fresh machine needs no protoc install.
use std::{env, error::Error, path::PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC from the environment.
    unsafe { env::set_var("PROTOC", protoc) };
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // BTreeMap keeps the encoding of `attributes` deterministic, so an idempotent retry
        // compares equal to the stored request.
        .btree_map(".")
        .file_descriptor_set_path(out_dir.join("fengkong_descriptor.bin"))
        .compile_protos(
            &[
                "proto/fengkong/v1/fengkong.proto",
                "proto/fengkong/v1/storage.proto",
            ],
            &["proto"],
        )?;
    // The web page's JSON API speaks the same messages in the canonical proto3 JSON form.
    let descriptors = std::fs::read(out_dir.join("fengkong_descriptor.bin"))?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .btree_map([".fengkong.v1"])
        .build(&[".fengkong.v1"])?;
    Ok(())
}
