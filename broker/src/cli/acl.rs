//! `broker acl add|remove|list`: access-control rules. A name ending in `*` is a prefix
//! (`--topic 'orders-*'`); `*` alone matches every name; `--cluster` is the cluster itself.

use super::admin::connect;
use super::output::{print_json, OutputFormat};
use proto::v1::{AclBinding, AclPatternType, AclResourceType};
use serde::Serialize;

/// `broker acl ...`
#[derive(clap::Subcommand, Debug)]
pub enum AclCommand {
    /// Allows a principal an operation on a resource.
    Add(AclArgs),
    /// Removes such a rule.
    Remove(AclArgs),
    /// Lists the rules (of one principal with `--principal`).
    List {
        /// Only this principal's rules.
        #[arg(long)]
        principal: Option<String>,
    },
}

/// One rule on the command line.
#[derive(clap::Args, Debug)]
pub struct AclArgs {
    /// Who: a user, a certificate's CN, or `*` (every authenticated principal).
    #[arg(long)]
    principal: String,
    /// all, read, write, create, delete, describe, alter-configs or alter.
    #[arg(long)]
    operation: String,
    /// A topic, or a prefix ending in `*`.
    #[arg(long, group = "resource")]
    topic: Option<String>,
    /// A consumer group, or a prefix ending in `*`.
    #[arg(long, group = "resource")]
    group: Option<String>,
    /// The cluster (admin operations).
    #[arg(long, group = "resource")]
    cluster: bool,
}

impl AclArgs {
    fn binding(self) -> anyhow::Result<AclBinding> {
        let (resource_type, name) = match (self.topic, self.group, self.cluster) {
            (Some(topic), None, false) => (AclResourceType::Topic, topic),
            (None, Some(group), false) => (AclResourceType::Group, group),
            (None, None, true) => (AclResourceType::Cluster, "cluster".to_string()),
            _ => anyhow::bail!("name one resource: --topic, --group or --cluster"),
        };
        let (pattern_type, resource_name) = match name.strip_suffix('*') {
            Some(prefix) if !prefix.is_empty() => (AclPatternType::Prefixed, prefix.to_string()),
            _ => (AclPatternType::Literal, name),
        };
        Ok(AclBinding {
            principal: self.principal,
            resource_type: resource_type as i32,
            resource_name,
            pattern_type: pattern_type as i32,
            operation: self.operation,
        })
    }
}

#[derive(Serialize)]
struct AclView {
    principal: String,
    resource_type: String,
    resource: String,
    operation: String,
}

fn view(binding: &AclBinding) -> AclView {
    let resource_type = match AclResourceType::try_from(binding.resource_type) {
        Ok(AclResourceType::Topic) => "topic",
        Ok(AclResourceType::Group) => "group",
        Ok(AclResourceType::Cluster) => "cluster",
        _ => "unknown",
    };
    let prefixed = AclPatternType::try_from(binding.pattern_type) == Ok(AclPatternType::Prefixed);
    AclView {
        principal: binding.principal.clone(),
        resource_type: resource_type.to_string(),
        resource: if prefixed {
            format!("{}*", binding.resource_name)
        } else {
            binding.resource_name.clone()
        },
        operation: binding.operation.clone(),
    }
}

/// Runs an `acl` command.
pub async fn run(bootstrap: &str, command: AclCommand, output: OutputFormat) -> anyhow::Result<()> {
    let cluster = connect(bootstrap);
    let add = matches!(command, AclCommand::Add(_));
    match command {
        AclCommand::Add(args) | AclCommand::Remove(args) => {
            let binding = args.binding()?;
            let shown = view(&binding);
            if add {
                cluster.add_acls(vec![binding]).await?;
            } else {
                cluster.remove_acls(vec![binding]).await?;
            }
            match output {
                OutputFormat::Json => print_json(&shown)?,
                OutputFormat::Text => println!(
                    "{} {} to {} {} {}",
                    if add { "allowed" } else { "no longer allowed:" },
                    shown.principal,
                    shown.operation,
                    shown.resource_type,
                    shown.resource
                ),
            }
        }
        AclCommand::List { principal } => {
            let rules: Vec<AclView> = cluster.list_acls(principal).await?.iter().map(view).collect();
            match output {
                OutputFormat::Json => print_json(&rules)?,
                OutputFormat::Text => {
                    for rule in &rules {
                        println!(
                            "{}  {}  {} {}",
                            rule.principal, rule.operation, rule.resource_type, rule.resource
                        );
                    }
                }
            }
        }
    }
    Ok(())
}
