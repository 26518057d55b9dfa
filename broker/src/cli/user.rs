//! `broker user create|delete|list`: SCRAM-SHA-256 users. The keys are derived from the
//! password here (a fresh salt, PBKDF2 iterations): the password never reaches a broker.

use super::admin::connect;
use super::output::{print_json, OutputFormat};
use anyhow::Context;
use serde::Serialize;
use std::io::BufRead;

/// `broker user ...`
#[derive(clap::Subcommand, Debug)]
pub enum UserCommand {
    /// Creates a user, or sets a new password for one.
    Create {
        /// User name (its principal).
        name: String,
        /// The password; without it the first line of standard input is read.
        #[arg(long)]
        password: Option<String>,
        /// PBKDF2 iterations (at least 4096).
        #[arg(long, default_value_t = proto::scram::DEFAULT_ITERATIONS)]
        iterations: u32,
    },
    /// Deletes a user (tokens it holds stay valid until they expire).
    Delete {
        /// User name.
        name: String,
    },
    /// Lists the users (names and iteration counts, never keys).
    List,
}

#[derive(Serialize)]
struct UserView {
    name: String,
    mechanism: String,
    iterations: u32,
}

/// Runs a `user` command.
pub async fn run(bootstrap: &str, command: UserCommand, output: OutputFormat) -> anyhow::Result<()> {
    let cluster = connect(bootstrap);
    match command {
        UserCommand::Create {
            name,
            password,
            iterations,
        } => {
            let password = match password {
                Some(password) => password,
                None => {
                    let mut line = String::new();
                    std::io::stdin()
                        .lock()
                        .read_line(&mut line)
                        .context("reading the password from standard input")?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            anyhow::ensure!(!password.is_empty(), "the password is empty");
            cluster.upsert_user(&name, &password, iterations).await?;
            match output {
                OutputFormat::Json => print_json(&serde_json::json!({ "user": name, "ok": true }))?,
                OutputFormat::Text => println!("user {name} set (SCRAM-SHA-256, {iterations} iterations)"),
            }
        }
        UserCommand::Delete { name } => {
            cluster.delete_user(&name).await?;
            match output {
                OutputFormat::Json => print_json(&serde_json::json!({ "user": name, "ok": true }))?,
                OutputFormat::Text => println!("deleted user {name}"),
            }
        }
        UserCommand::List => {
            let users: Vec<UserView> = cluster
                .list_users()
                .await?
                .into_iter()
                .map(|u| UserView {
                    name: u.name,
                    mechanism: u.mechanism,
                    iterations: u.iterations,
                })
                .collect();
            match output {
                OutputFormat::Json => print_json(&users)?,
                OutputFormat::Text => {
                    for user in &users {
                        println!("{}  {}  {} iterations", user.name, user.mechanism, user.iterations);
                    }
                }
            }
        }
    }
    Ok(())
}
