//! Repository hygiene that the compiler does not check.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().and_then(|name| name.to_str()).unwrap_or_default();
        if path.is_dir() && name != "target" && !name.starts_with('.') {
            rust_files(&path, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let mut files = Vec::new();
    for crate_dir in ["sync-core", "server", "cli", "tests"] {
        rust_files(&root.join(crate_dir), &mut files);
    }
    let missing: Vec<_> = files
        .iter()
        .filter(|path| !std::fs::read_to_string(path).expect("read").starts_with("//!"))
        .collect();
    assert!(!files.is_empty());
    assert!(missing.is_empty(), "files without a leading `//!` doc: {missing:?}");
}
