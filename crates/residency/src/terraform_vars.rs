//! `residency terraform-vars`: writes the Terraform inputs of `terraform/envs/example`
//! (`regions.auto.tfvars.json`) from the region catalogue, the single source of truth;
//! `--check` only compares, for CI and reviews.

use std::path::PathBuf;

use anyhow::{Context as _, bail};

#[derive(Debug, clap::Args)]
pub(crate) struct TerraformVarsArgs {
    #[arg(long, env = "RESIDENCY_CATALOG", default_value_os_t = crate::default_catalog())]
    catalog: PathBuf,
    /// Where to write (relative paths from the working directory).
    #[arg(long, default_value = catalog::TERRAFORM_VARS_PATH)]
    output: PathBuf,
    /// Do not write: exit non-zero when the file differs from the catalogue.
    #[arg(long)]
    check: bool,
}

pub(crate) fn run(args: TerraformVarsArgs) -> anyhow::Result<()> {
    let catalog = catalog::Catalog::load_dir(&args.catalog)?;
    let generated = catalog::terraform_vars(&catalog);
    let current = std::fs::read_to_string(&args.output).ok();
    if args.check {
        if current.as_deref() != Some(generated.as_str()) {
            bail!(
                "{} does not match the catalogue in {}: run `{}`",
                args.output.display(),
                args.catalog.display(),
                catalog::TERRAFORM_VARS_COMMAND
            );
        }
        println!("{} matches the catalogue", args.output.display());
        return Ok(());
    }
    if current.as_deref() == Some(generated.as_str()) {
        println!("{} is up to date", args.output.display());
        return Ok(());
    }
    std::fs::write(&args.output, generated)
        .with_context(|| format!("write {}", args.output.display()))?;
    println!(
        "wrote {} from {} ({} regions)",
        args.output.display(),
        args.catalog.display(),
        catalog.len()
    );
    Ok(())
}
