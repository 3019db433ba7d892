//! The binary: arguments in, exit code out. Everything else is in the library.

fn main() -> std::process::ExitCode {
    let mut args = std::env::args();
    let program = args.next().unwrap_or_else(|| "mailcow-ldap-sync".into());
    let program = std::path::Path::new(&program)
        .file_name()
        .map_or_else(|| program.clone(), |n| n.to_string_lossy().into_owned());
    let args: Vec<String> = args.collect();
    std::process::ExitCode::from(mailcow_ldap_sync::main_with_args(&program, &args))
}
