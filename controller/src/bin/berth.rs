//! `berth`: the aws-CLI-shaped command line for a Berth controller.

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match berth_controller::cli::run(args).await {
        Ok(out) => println!("{}", out.trim_end()),
        Err(e) => {
            eprintln!("{}", e.to_string().trim_end());
            std::process::exit(e.exit_code());
        }
    }
}
