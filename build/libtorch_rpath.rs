//! Build script of the crates whose binaries and tests link libtorch (feature `tch`): records
//! libtorch's directory as the binaries' run-time search path, so `dacapo` and the tests find
//! `libtorch_cpu.so` / `libtorch_cuda.so` without `LD_LIBRARY_PATH`.
//!
//! torch-sys (which these crates depend on directly when `tch` is on) publishes the directory
//! it linked against as `DEP_TCH_LIBTORCH_LIB`: the same libtorch, wherever it came from
//! (a PyTorch venv with `LIBTORCH_USE_PYTORCH=1`, or `LIBTORCH`).

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        // Applies to this package's binaries, tests, examples and benches (not its library).
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
