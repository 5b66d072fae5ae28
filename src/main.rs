//! The `flowshard` binary: parse the command line and run the subcommand ([`flowshard::cli`]).

fn main() -> anyhow::Result<()> {
    flowshard::cli::main()
}
