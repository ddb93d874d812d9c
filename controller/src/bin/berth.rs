//! `berth`: the aws-CLI-shaped command line for a Berth controller.

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match berth_controller::cli::run(args).await {
        Ok(out) if out.is_empty() => {}
        Ok(out) if out.ends_with('\n') => print!("{out}"),
        Ok(out) => println!("{out}"),
        Err(berth_controller::cli::CliError::Exit(code)) => std::process::exit(code),
        Err(e) => {
            // One line: a message never spans lines, so scripts can log it as one.
            eprintln!("{}", e.to_string().trim_end().replace('\n', " "));
            std::process::exit(e.exit_code());
        }
    }
}
