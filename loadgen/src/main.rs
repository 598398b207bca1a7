//! loadgen binary entry point: parse flags, raise the fd limit, run the scenario, print.

use clap::Parser;

use loadgen::cli::{Cli, Cmd};
use loadgen::scenarios::{churn, churn_deliveries, conns, fanout};

fn main() {
    let cli = Cli::parse();
    loadgen::net::raise_nofile();
    let (res, json) = match &cli.cmd {
        Cmd::Fanout(a) => (fanout::run(a), a.common.json),
        Cmd::Conns(a) => (conns::run(a), a.common.json),
        Cmd::Churn(a) => (churn::run(a), a.common.json),
        Cmd::ChurnDeliveries(a) => (churn_deliveries::run(a), a.common.json),
    };
    match res {
        Ok(serde_json::Value::Null) => {}
        Ok(v) => match &cli.cmd {
            Cmd::Fanout(_) => fanout::print(&v, json),
            Cmd::Conns(_) => conns::print(&v, json),
            Cmd::Churn(_) => churn::print(&v, json),
            Cmd::ChurnDeliveries(_) => churn_deliveries::print(&v, json),
        },
        Err(e) => {
            let child = match &cli.cmd {
                Cmd::Fanout(a) => a.common.child.is_some(),
                Cmd::Conns(a) => a.common.child.is_some(),
                Cmd::Churn(a) => a.common.child.is_some(),
                Cmd::ChurnDeliveries(a) => a.common.child.is_some(),
            };
            if child {
                println!("FAIL {e}");
            }
            eprintln!("loadgen: error: {e}");
            std::process::exit(2);
        }
    }
}
