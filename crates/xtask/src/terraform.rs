//! `cargo xtask terraform`: every check of `terraform/` in one command. Format check;
//! `init -plugin-dir` and `validate` of every root (modules and environments);
//! `terraform test` (mock providers) where a root has tests; a plan, apply, re-plan (must
//! show no changes) and destroy of `envs/moto` against a `moto_server` started for the run
//! on a free loopback port and always stopped; and a checkov scan at a pinned version
//! (installed into a cache venv with pip when missing). Terraform runs on a copy of
//! `terraform/` in a temporary directory, so no `.terraform`, lock or state file is ever
//! left in the repository. A missing tool fails the run, naming what to install.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};

/// The checkov release the scan is pinned to (from PyPI).
const CHECKOV_VERSION: &str = "3.3.30";
/// Where the AWS provider is mirrored on this machine (ENGINEERING.md, "This machine").
const DEFAULT_PLUGIN_DIR: &str = "/opt/tf-plugins";

/// Runs every Terraform check and prints one line per step with its duration.
pub(crate) fn run(root: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let terraform = find_terraform()?;
    let plugin_dir = plugin_dir()?;
    let source = root.join("terraform");
    let work = Workdir::create()?;
    copy_tree(&source, &work.path.join("terraform"))?;
    let tf = Terraform {
        program: terraform,
        plugin_dir,
        cli_config: work.path.join("terraformrc"),
    };
    // An empty CLI configuration: no user settings, no credentials helpers, no mirrors
    // other than the -plugin-dir we pass.
    std::fs::write(&tf.cli_config, "").context("write the terraform CLI configuration")?;

    step("fmt -check", || {
        tf.run(&source, &["fmt", "-check", "-recursive", "-diff"])
    })?;

    let copy = work.path.join("terraform");
    for root in roots(&copy)? {
        let name = root
            .strip_prefix(&copy)
            .unwrap_or(&root)
            .display()
            .to_string();
        step(&format!("init + validate {name}"), || {
            tf.init(&root)?;
            tf.run(&root, &["validate", "-no-color"])
        })?;
        if has_tests(&root)? {
            step(&format!("test {name}"), || {
                tf.run(&root, &["test", "-no-color"])
            })?;
        }
    }

    step("moto plan/apply/re-plan/destroy envs/moto", || {
        moto_cycle(&tf, &copy.join("envs/moto"), &work.path)
    })?;

    step(&format!("checkov {CHECKOV_VERSION}"), || {
        let checkov = checkov()?;
        let status = Command::new(&checkov)
            .args(["--directory"])
            .arg(&source)
            .args(["--framework", "terraform", "--quiet", "--compact"])
            // Offline: no guideline download, no version check.
            .env("BC_SKIP_MAPPING", "TRUE")
            .env("CHECKOV_SKIP_VERSION_CHECK", "TRUE")
            .status()
            .with_context(|| format!("run {}", checkov.display()))?;
        if !status.success() {
            bail!(
                "checkov found failed checks (above): fix them, or skip one inline with `#checkov:skip=CKV_...:reason`"
            );
        }
        Ok(())
    })?;

    println!(
        "terraform: ok ({:.0}s)",
        started.elapsed().as_secs_f64().round()
    );
    Ok(())
}

fn step(name: &str, body: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
    println!("terraform: {name}");
    let started = Instant::now();
    body().with_context(|| format!("terraform step `{name}` failed"))?;
    println!(
        "terraform: {name}: ok ({:.1}s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

struct Terraform {
    program: PathBuf,
    plugin_dir: PathBuf,
    cli_config: PathBuf,
}

impl Terraform {
    fn command(&self, dir: &Path) -> Command {
        let mut command = Command::new(&self.program);
        command
            .current_dir(dir)
            .env("TF_CLI_CONFIG_FILE", &self.cli_config)
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("CHECKPOINT_DISABLE", "1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("TF_DATA_DIR")
            .env_remove("TF_PLUGIN_CACHE_DIR")
            .env_remove("TF_WORKSPACE");
        command
    }

    fn run(&self, dir: &Path, args: &[&str]) -> anyhow::Result<()> {
        let status = self
            .command(dir)
            .args(args)
            .status()
            .with_context(|| format!("run terraform {}", args.join(" ")))?;
        if !status.success() {
            bail!(
                "terraform {} in {} ({status})",
                args.join(" "),
                dir.display()
            );
        }
        Ok(())
    }

    /// The exit code of a command that may legitimately fail (plan -detailed-exitcode).
    fn code(&self, dir: &Path, args: &[&str]) -> anyhow::Result<Option<i32>> {
        let status = self
            .command(dir)
            .args(args)
            .status()
            .with_context(|| format!("run terraform {}", args.join(" ")))?;
        Ok(status.code())
    }

    fn init(&self, dir: &Path) -> anyhow::Result<()> {
        let plugin_dir = format!("-plugin-dir={}", self.plugin_dir.display());
        // Quiet on success: init's output is long and says nothing when it works.
        let output = self
            .command(dir)
            .args(["init", "-backend=false", "-no-color", &plugin_dir])
            .output()
            .context("run terraform init")?;
        if !output.status.success() {
            bail!(
                "terraform init in {} ({}):\n{}{}",
                dir.display(),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }
}

/// Apply, re-plan and destroy the moto root against a fresh `moto_server`, which is
/// stopped when this returns, whatever happened.
fn moto_cycle(tf: &Terraform, dir: &Path, work: &Path) -> anyhow::Result<()> {
    let moto = Moto::start(&work.join("moto.log"))?;
    let var = format!("moto_endpoint=http://127.0.0.1:{}", moto.port);
    let result = (|| {
        tf.init(dir)?;
        tf.run(
            dir,
            &["plan", "-no-color", "-out=moto.tfplan", "-var", &var],
        )?;
        tf.run(dir, &["apply", "-no-color", "-auto-approve", "moto.tfplan"])?;
        // What moto holds now must be exactly the configuration: a diff means a module
        // sets something that does not round-trip (or moto dropped it).
        match tf.code(
            dir,
            &["plan", "-no-color", "-detailed-exitcode", "-var", &var],
        )? {
            Some(0) => {}
            Some(2) => bail!("the plan after apply is not empty (changes above)"),
            other => bail!("terraform plan after apply failed (exit {other:?})"),
        }
        tf.run(
            dir,
            &["destroy", "-no-color", "-auto-approve", "-var", &var],
        )
    })();
    let stopped = moto.stop();
    match (result, stopped) {
        // The work directory goes away with the run: show the end of moto's log now.
        (Err(err), _) => Err(err.context(format!(
            "last lines of the moto_server log:\n{}",
            log_tail(&work.join("moto.log"), 20)
        ))),
        (Ok(()), stopped) => stopped,
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A `moto_server` on a free loopback port, in its own process group so that stopping it
/// also stops anything it started. Stopped on drop if `stop` was not called.
struct Moto {
    child: Option<Child>,
    port: u16,
}

impl Moto {
    fn start(log: &Path) -> anyhow::Result<Self> {
        let program = on_path("moto_server").ok_or_else(|| {
            anyhow::anyhow!(
                "moto_server is not installed (an S3/KMS/IAM-compatible server for the apply test): pip install \"moto[server]\""
            )
        })?;
        let port = free_port()?;
        let log_file = std::fs::File::create(log).context("create the moto log")?;
        let child = Command::new(program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().context("moto log")?)
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .context("start moto_server")?;
        let moto = Self {
            child: Some(child),
            port,
        };
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "moto_server did not listen on {address} within 30s (log: {})",
                    log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        println!("terraform: moto_server listening on {address}");
        Ok(moto)
    }

    fn stop(mut self) -> anyhow::Result<()> {
        self.kill()
    }

    fn kill(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let group = format!("-{}", child.id());
        // TERM to the whole group, then KILL whatever is left after a grace period.
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if child.try_wait().context("wait for moto_server")?.is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
                child.wait().context("wait for moto_server")?;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // The group may outlive its leader (a shim that forked): make sure it is gone.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        Ok(())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Err(err) = self.kill() {
            eprintln!("error: stop moto_server: {err:#}");
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("find a free port")?;
    Ok(listener.local_addr().context("find a free port")?.port())
}

/// A temporary directory, removed on drop.
struct Workdir {
    path: PathBuf,
}

impl Workdir {
    fn create() -> anyhow::Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "residency-terraform-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir_all(&self.path) {
            eprintln!("error: remove {}: {err}", self.path.display());
        }
    }
}

/// Copies `from` to `to`, leaving out what Terraform writes into a root (`.terraform`,
/// lock files, state, plans), should an operator have run it in the repository.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("create {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("read {}", from.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if is_terraform_output(&name) {
            continue;
        }
        let path = entry.path();
        let target = to.join(&*name);
        if entry.file_type()?.is_dir() {
            copy_tree(&path, &target)?;
        } else {
            std::fs::copy(&path, &target)
                .with_context(|| format!("copy {} to {}", path.display(), target.display()))?;
        }
    }
    Ok(())
}

fn is_terraform_output(name: &str) -> bool {
    name == ".terraform"
        || name == ".terraform.lock.hcl"
        || name.ends_with(".tfstate")
        || name.ends_with(".tfstate.backup")
        || name.ends_with(".tfplan")
}

/// Every Terraform root: each directory of `modules/` and `envs/`, sorted.
fn roots(terraform: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut roots = Vec::new();
    for group in ["modules", "envs"] {
        let dir = terraform.join(group);
        for entry in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                roots.push(path);
            }
        }
    }
    roots.sort();
    if roots.is_empty() {
        bail!("no Terraform roots under {}", terraform.display());
    }
    Ok(roots)
}

fn has_tests(root: &Path) -> anyhow::Result<bool> {
    let dir = root.join("tests");
    if !dir.is_dir() {
        return Ok(false);
    }
    for entry in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
        if entry?
            .file_name()
            .to_string_lossy()
            .ends_with(".tftest.hcl")
        {
            return Ok(true);
        }
    }
    Ok(false)
}

fn find_terraform() -> anyhow::Result<PathBuf> {
    let found = match std::env::var_os("TERRAFORM") {
        Some(path) => Some(PathBuf::from(path)),
        None => on_path("terraform"),
    };
    let Some(program) = found.filter(|p| p.is_file()) else {
        bail!(
            "terraform is not installed: install Terraform 1.9 or later (e.g. to /usr/local/bin/terraform; \
             Debian: the `terraform` package from HashiCorp's apt repository), or set TERRAFORM to its path"
        );
    };
    Ok(program)
}

fn plugin_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os("RESIDENCY_TF_PLUGIN_DIR")
        .map_or_else(|| PathBuf::from(DEFAULT_PLUGIN_DIR), PathBuf::from);
    // The mirror's layout is <host>/hashicorp/aws/<version>/<platform>/.
    let has_aws = std::fs::read_dir(&dir)
        .map(|hosts| {
            hosts
                .flatten()
                .any(|host| host.path().join("hashicorp/aws").is_dir())
        })
        .unwrap_or(false);
    if !has_aws {
        bail!(
            "the AWS provider is not mirrored in {}: put hashicorp/aws 5.x there \
             (`terraform providers mirror {}` on a machine with access to the Terraform registry), \
             or set RESIDENCY_TF_PLUGIN_DIR to a directory holding it",
            dir.display(),
            dir.display()
        );
    }
    Ok(dir)
}

/// The pinned checkov: `CHECKOV` if set, else a `checkov` on PATH at the pinned version,
/// else a venv in the user's cache, created with pip when missing.
fn checkov() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("CHECKOV") {
        return Ok(PathBuf::from(path));
    }
    if let Some(path) = on_path("checkov")
        && version_of(&path).as_deref() == Some(CHECKOV_VERSION)
    {
        return Ok(path);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    let venv = cache
        .join("residency")
        .join(format!("checkov-{CHECKOV_VERSION}"));
    let program = venv.join("bin/checkov");
    if version_of(&program).as_deref() == Some(CHECKOV_VERSION) {
        return Ok(program);
    }
    println!(
        "terraform: installing checkov=={CHECKOV_VERSION} into {}",
        venv.display()
    );
    let python = on_path("python3").ok_or_else(|| {
        anyhow::anyhow!(
            "python3 is not installed (needed for checkov): apt-get install -y python3 python3-venv"
        )
    })?;
    let _ = std::fs::remove_dir_all(&venv);
    let status = Command::new(python)
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .context("create the checkov venv")?;
    if !status.success() {
        bail!(
            "python3 -m venv {} failed: apt-get install -y python3-venv",
            venv.display()
        );
    }
    let status = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", &format!("checkov=={CHECKOV_VERSION}")])
        .status()
        .context("pip install checkov")?;
    if !status.success() {
        bail!("pip install checkov=={CHECKOV_VERSION} failed (is PyPI reachable?)");
    }
    match version_of(&program) {
        Some(version) if version == CHECKOV_VERSION => Ok(program),
        other => bail!("installed checkov reports version {other:?}, expected {CHECKOV_VERSION}"),
    }
}

fn version_of(program: &Path) -> Option<String> {
    let output = Command::new(program).arg("--version").output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terraform_outputs_are_not_copied() {
        for name in [
            ".terraform",
            ".terraform.lock.hcl",
            "terraform.tfstate",
            "terraform.tfstate.backup",
            "moto.tfplan",
        ] {
            assert!(is_terraform_output(name), "{name}");
        }
        for name in ["main.tf", "regions.auto.tfvars.json", "tests"] {
            assert!(!is_terraform_output(name), "{name}");
        }
    }

    #[test]
    fn every_root_of_the_repository_is_found() {
        let roots = roots(&crate::repo_root().join("terraform")).expect("roots");
        let names: Vec<String> = roots
            .iter()
            .map(|r| {
                r.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        for expected in ["region", "region_compute", "global", "example", "moto"] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} in {names:?}"
            );
        }
    }

    #[test]
    fn a_free_port_is_bindable() {
        let port = free_port().expect("port");
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("bind the free port");
    }
}
