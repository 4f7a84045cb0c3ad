//! `gemba node key|enroll|revoke`: a node's key, and the lists of keys
//! nodes believe; `gemba node retire` (the market's) is passed on.

use gemba_mesh::identity::{self, NodeIdentity};

use crate::cli::NodeCommand;

pub enum Failure {
    /// Bad configuration or arguments: exit 64.
    Config(String),
    Other(anyhow::Error),
}

pub fn run(command: NodeCommand) -> Result<(), Failure> {
    match command {
        NodeCommand::Retire { node, write } => {
            crate::market_cmd::retire(&node, &write).map_err(Failure::Other)
        }
        NodeCommand::Key(args) => {
            let config = args
                .load_config()
                .map_err(|e| Failure::Config(e.to_string()))?;
            let (me, created) = NodeIdentity::load_or_create(&config.node.data_dir)
                .map_err(|e| Failure::Other(anyhow::anyhow!(e)))?;
            if created {
                eprintln!(
                    "created {}",
                    config.node.data_dir.join("node.key").display()
                );
            }
            println!("{} {}", config.node.id, me.public());
            Ok(())
        }
        NodeCommand::Enroll {
            id,
            key,
            nodes_file,
            tags,
        } => {
            if !gemba_core::ids::is_name(&id) {
                return Err(Failure::Config(format!(
                    "{id:?} is not a node id: 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit"
                )));
            }
            let pk = identity::parse_public(&key).ok_or_else(|| {
                Failure::Config(format!(
                    "{key:?} is not a node key (print one with `gemba node key` on the node)"
                ))
            })?;
            if let Some(bad) = tags.iter().find(|t| !gemba_core::ids::is_name(t)) {
                return Err(Failure::Config(format!("{bad:?} is not a tier name")));
            }
            let mut list = identity::read_node_list(&nodes_file).map_err(Failure::Config)?;
            let replaced = list.keys.insert(id.clone(), pk).is_some();
            if tags.is_empty() {
                list.tags.remove(&id);
            } else {
                list.tags.insert(id.clone(), tags.clone());
            }
            identity::write_list(&nodes_file, &list)
                .map_err(|e| Failure::Other(anyhow::anyhow!(e)))?;
            println!(
                "{} {id}{} in {} ({} node(s) enrolled)",
                if replaced { "replaced" } else { "enrolled" },
                if tags.is_empty() {
                    String::new()
                } else {
                    format!(" (tiers {})", tags.join(","))
                },
                nodes_file.display(),
                list.keys.len()
            );
            Ok(())
        }
        NodeCommand::Revoke {
            id,
            nodes_file,
            data_dir,
        } => {
            let file = match (nodes_file, data_dir) {
                (Some(f), _) => f,
                (None, Some(d)) => d.join("known_nodes"),
                (None, None) => unreachable!("clap requires one of them"),
            };
            let mut list = identity::read_node_list(&file).map_err(Failure::Config)?;
            list.tags.remove(&id);
            if list.keys.remove(&id).is_none() {
                return Err(Failure::Other(anyhow::anyhow!(
                    "{id} has no key in {}",
                    file.display()
                )));
            }
            identity::write_list(&file, &list).map_err(|e| Failure::Other(anyhow::anyhow!(e)))?;
            println!("revoked {id} in {}", file.display());
            Ok(())
        }
    }
}
