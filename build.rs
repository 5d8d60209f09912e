//! Generates the gRPC code from proto/ with a protoc shipped inside a crate, so a fresh
//! machine needs no protoc install; lists the bundled rule pack for `include_str!`, so the
//! binary carries it (see `src/bundled.rs`); and tells the browser test whether a browser
//! is installed.
use std::{env, error::Error, fmt::Write as _, path::Path, path::PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    // Without these, cargo reruns the build script (and rebuilds the crate) whenever any
    // file in the package changes, e.g. a CSV written into the repository.
    for path in ["build.rs", "proto", "rules"] {
        println!("cargo:rerun-if-changed={path}");
    }
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
                "proto/fengkong/v1/cases.proto",
            ],
            &["proto"],
        )?;
    // The web page's JSON API speaks the same messages in the canonical proto3 JSON form.
    let descriptors = std::fs::read(out_dir.join("fengkong_descriptor.bin"))?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .btree_map([".fengkong.v1"])
        .build(&[".fengkong.v1"])?;
    bundle_rules(&out_dir)?;
    mark_missing_browser();
    Ok(())
}

/// tests/web_page.rs drives Debian's Chromium. Without it the test is compiled as ignored,
/// with the reason, so `cargo test` shows it: a skip inside a passing test prints nothing.
/// FENGKONG_REQUIRE_BROWSER (CI) keeps it running, so a missing browser fails it there.
fn mark_missing_browser() {
    println!("cargo::rustc-check-cfg=cfg(fengkong_no_browser)");
    println!("cargo:rerun-if-env-changed=FENGKONG_REQUIRE_BROWSER");
    if Path::new("/usr/bin").is_dir() {
        // Installing the browser adds files here, so the check runs again.
        println!("cargo:rerun-if-changed=/usr/bin");
    }
    let present = ["/usr/bin/chromium", "/usr/bin/chromedriver"]
        .iter()
        .all(|p| Path::new(p).exists());
    if !present && env::var_os("FENGKONG_REQUIRE_BROWSER").is_none() {
        println!("cargo:rustc-cfg=fengkong_no_browser");
    }
}

/// Writes `bundled_rules.rs`: `(name, include_str!(file))` for every rule file directly in
/// `rules/` and every file in `rules/lists/`, named as `RuleSet::load_dir` names them, so the
/// bundled pack has the same version as the folder it was built from.
fn bundle_rules(out_dir: &Path) -> Result<(), Box<dyn Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("rules");
    let mut files = Vec::new();
    for (sub, wanted) in [("", Some("toml")), ("lists", None)] {
        for entry in std::fs::read_dir(root.join(sub))? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let matches = wanted.is_none_or(|ext| path.extension().is_some_and(|e| e == ext));
            if path.is_file() && matches && !name.starts_with('.') {
                let key = if sub.is_empty() {
                    name.to_owned()
                } else {
                    format!("{sub}/{name}")
                };
                files.push((key, path));
            }
        }
    }
    files.sort();
    let mut code = String::from("&[\n");
    for (key, path) in files {
        writeln!(code, "    ({key:?}, include_str!({:?})),", path.display())?;
    }
    code.push_str("]\n");
    std::fs::write(out_dir.join("bundled_rules.rs"), code)?;
    Ok(())
}
