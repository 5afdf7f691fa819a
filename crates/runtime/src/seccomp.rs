//! Seccomp: Docker's default profile and moby's profile format, turned into the OCI
//! `linux.seccomp` the way moby does it (`profiles/seccomp/seccomp_linux.go`).
//!
//! `seccomp_default.json` is moby's `profiles/seccomp/default.json` (Apache-2.0; as vendored in
//! moby/moby at b985e2313a86, `vendor/github.com/moby/profiles/seccomp/`), embedded
//! as it is. A moby profile is the OCI one plus conditions: `archMap` (the host's
//! architecture and its sub-architectures), and per rule `includes`/`excludes` by
//! capability (of the container's final bounding set), architecture (Go's names: `amd64`,
//! `arm64`) and minimum kernel. Resolving the conditions gives the OCI document.
//!
//! The default profile is parsed once per process and its resolution cached per capability
//! set, so a start pays for neither.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::Error;

/// moby's `profiles/seccomp/default.json`.
const DEFAULT_PROFILE: &str = include_str!("seccomp_default.json");

/// Go's JSON reads `null` as the zero value; so does this.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A profile in moby's format (`seccomp.Seccomp`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    #[serde(default, deserialize_with = "nullable")]
    default_action: String,
    #[serde(default, deserialize_with = "nullable")]
    default_errno_ret: Option<u32>,
    #[serde(default, deserialize_with = "nullable")]
    architectures: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    arch_map: Vec<ArchMap>,
    #[serde(default, deserialize_with = "nullable")]
    syscalls: Vec<Rule>,
    #[serde(default, deserialize_with = "nullable")]
    flags: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    listener_path: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    listener_metadata: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: String,
    #[serde(default, deserialize_with = "nullable")]
    sub_architectures: Vec<String>,
}

/// One rule (`seccomp.Syscall`): the OCI syscall entry plus its conditions.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default, deserialize_with = "nullable")]
    names: Vec<String>,
    /// The old single-name form.
    #[serde(default, deserialize_with = "nullable")]
    name: String,
    action: String,
    #[serde(default, deserialize_with = "nullable")]
    errno_ret: Option<u32>,
    #[serde(default, deserialize_with = "nullable")]
    args: Vec<Arg>,
    #[serde(default, deserialize_with = "nullable")]
    includes: Option<Filter>,
    #[serde(default, deserialize_with = "nullable")]
    excludes: Option<Filter>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Arg {
    index: u32,
    value: u64,
    #[serde(default, deserialize_with = "nullable")]
    value_two: u64,
    op: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default, deserialize_with = "nullable")]
    caps: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    arches: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    min_kernel: Option<String>,
}

/// `(kernel, major)` of `X.Y[...]`.
fn kernel_version(release: &str) -> Option<(u64, u64)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let kernel = parts.next()?.parse().ok()?;
    let major = parts.next()?.parse().ok()?;
    Some((kernel, major))
}

fn host_kernel() -> (u64, u64) {
    static KERNEL: OnceLock<(u64, u64)> = OnceLock::new();
    *KERNEL.get_or_init(|| {
        nix::sys::utsname::uname()
            .ok()
            .and_then(|u| kernel_version(&u.release().to_string_lossy()))
            .unwrap_or((0, 0))
    })
}

/// Go's name of this architecture, as the profile's `arches` conditions use it, and its
/// libseccomp name.
fn host_arch() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", "SCMP_ARCH_X86_64"),
        "x86" => ("x86", "SCMP_ARCH_X86"),
        "aarch64" => ("arm64", "SCMP_ARCH_AARCH64"),
        "arm" => ("arm", "SCMP_ARCH_ARM"),
        "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", "SCMP_ARCH_PPC64LE"),
        "powerpc64" => ("ppc64", "SCMP_ARCH_PPC64"),
        "s390x" => ("s390x", "SCMP_ARCH_S390X"),
        "riscv64" => ("riscv64", "SCMP_ARCH_RISCV64"),
        "loongarch64" => ("loongarch64", "SCMP_ARCH_LOONGARCH64"),
        "mips64" => ("mips64", "SCMP_ARCH_MIPS64"),
        other => (other, ""),
    }
}

/// Whether the running kernel serves x32 system calls. Most kernels do not (Debian's needs
/// `syscall.x32=y` at boot); then no x32 binary can run in a container at all, and leaving
/// x32 out of the filter changes nothing but the cost of building it, which libcontainer
/// pays in every container at start (about a third of the profile's arches).
fn x32_abi() -> bool {
    static X32: OnceLock<bool> = OnceLock::new();
    *X32.get_or_init(|| {
        if std::env::consts::ARCH != "x86_64" {
            return false;
        }
        const X32_SYSCALL_BIT: libc::c_long = 0x4000_0000;
        // SAFETY: getpid through the x32 entry point takes no arguments and touches no
        // memory; an x32-less kernel answers ENOSYS.
        let r = unsafe { libc::syscall(X32_SYSCALL_BIT | libc::SYS_getpid) };
        r >= 0
    })
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::Seccomp { reason: reason.into() }
}

impl Profile {
    fn parse(json: &str) -> Result<Profile, Error> {
        let profile: Profile =
            serde_json::from_str(json).map_err(|e| invalid(format!("Decoding seccomp profile failed: {e}")))?;
        if !profile.architectures.is_empty() && !profile.arch_map.is_empty() {
            return Err(invalid(
                "both 'architectures' and 'archMap' are specified in the seccomp profile, use either 'architectures' or 'archMap'",
            ));
        }
        for rule in &profile.syscalls {
            if !rule.name.is_empty() && !rule.names.is_empty() {
                return Err(invalid(
                    "both 'name' and 'names' are specified in the seccomp profile, use either 'name' or 'names'",
                ));
            }
            for filter in [&rule.includes, &rule.excludes].into_iter().flatten() {
                if let Some(v) = &filter.min_kernel {
                    match kernel_version(v) {
                        Some((k, m)) if (k, m) != (0, 0) && v.split('.').count() == 2 => {}
                        _ => {
                            return Err(invalid(format!(
                                "invalid kernel version: {v:?}, expected \"<kernel>.<major>\""
                            )));
                        }
                    }
                }
            }
        }
        Ok(profile)
    }

    /// The OCI `linux.seccomp` for a container whose bounding set is `caps`; `None` when
    /// the profile has no default action and no rules (seccomp off, as moby reads it).
    fn resolve(&self, caps: &[String]) -> Option<Value> {
        if self.default_action.is_empty() && self.syscalls.is_empty() {
            return None;
        }
        let (arch, scmp_arch) = host_arch();
        let kernel = host_kernel();
        let kernel_at_least = |v: &str| kernel_version(v).is_some_and(|min| kernel >= min);
        let mut architectures = self.architectures.clone();
        if let Some(m) = self.arch_map.iter().find(|m| m.architecture == scmp_arch) {
            architectures.push(m.architecture.clone());
            architectures.extend(
                m.sub_architectures
                    .iter()
                    .filter(|a| a.as_str() != "SCMP_ARCH_X32" || x32_abi())
                    .cloned(),
            );
        }
        let mut syscalls = Vec::new();
        for rule in &self.syscalls {
            if let Some(ex) = &rule.excludes {
                if ex.arches.iter().any(|a| a == arch)
                    || ex.caps.iter().any(|c| caps.contains(c))
                    || ex.min_kernel.as_deref().is_some_and(kernel_at_least)
                {
                    continue;
                }
            }
            if let Some(inc) = &rule.includes {
                if !inc.arches.is_empty() && !inc.arches.iter().any(|a| a == arch)
                    || !inc.caps.iter().all(|c| caps.contains(c))
                    || inc.min_kernel.as_deref().is_some_and(|v| !kernel_at_least(v))
                {
                    continue;
                }
            }
            let names = if rule.name.is_empty() {
                rule.names.clone()
            } else {
                vec![rule.name.clone()]
            };
            let mut entry = json!({"names": names, "action": rule.action});
            if let Some(e) = rule.errno_ret {
                entry["errnoRet"] = json!(e);
            }
            if !rule.args.is_empty() {
                entry["args"] = Value::Array(rule.args.iter().map(oci_arg).collect());
            }
            syscalls.push(entry);
        }
        let mut out = json!({
            "defaultAction": self.default_action,
            "architectures": architectures,
            "syscalls": syscalls,
        });
        if let Some(e) = self.default_errno_ret {
            out["defaultErrnoRet"] = json!(e);
        }
        if !self.flags.is_empty() {
            out["flags"] = json!(self.flags);
        }
        if let Some(p) = &self.listener_path {
            out["listenerPath"] = json!(p);
        }
        if let Some(m) = &self.listener_metadata {
            out["listenerMetadata"] = json!(m);
        }
        Some(out)
    }
}

/// An argument condition for libcontainer. For `SCMP_CMP_MASKED_EQ` the OCI spec (and runc)
/// read `(arg & value) == valueTwo`; libcontainer 0.7.0 hands libseccomp `valueTwo` as the
/// mask and `value` as the datum, so the two are swapped here to keep the profile's meaning
/// (without it, `clone` without namespace flags would be refused and nothing could fork).
fn oci_arg(a: &Arg) -> Value {
    let (value, value_two) = if a.op == "SCMP_CMP_MASKED_EQ" {
        (a.value_two, a.value)
    } else {
        (a.value, a.value_two)
    };
    json!({"index": a.index, "value": value, "valueTwo": value_two, "op": a.op})
}

fn default_profile() -> &'static Profile {
    static PROFILE: OnceLock<Profile> = OnceLock::new();
    PROFILE.get_or_init(|| Profile::parse(DEFAULT_PROFILE).expect("the embedded default profile parses"))
}

/// Docker's default profile resolved for the bounding set `caps` (cached per set).
pub(crate) fn default_for(caps: &[String]) -> Arc<Value> {
    static CACHE: OnceLock<Mutex<HashMap<Vec<String>, Arc<Value>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    let mut map = cache.lock().unwrap_or_else(|p| p.into_inner());
    map.entry(caps.to_vec())
        .or_insert_with(|| {
            Arc::new(
                default_profile()
                    .resolve(caps)
                    .expect("the default profile has a default action"),
            )
        })
        .clone()
}

/// A profile given with `--security-opt seccomp=<json>`, resolved for `caps`.
pub(crate) fn custom(json: &str, caps: &[String]) -> Result<Option<Value>, Error> {
    let resolved = Profile::parse(json)?.resolve(caps);
    if let Some(v) = &resolved {
        // What libcontainer will read: unknown actions, operators or architectures fail here.
        serde_json::from_value::<oci_spec::runtime::LinuxSeccomp>(v.clone())
            .map_err(|e| invalid(format!("Decoding seccomp profile failed: {e}")))?;
    }
    Ok(resolved)
}

/// Checks a profile given with `--security-opt seccomp=<json>` (moby's format).
pub fn check_seccomp_profile(json: &str) -> Result<(), Error> {
    custom(json, &[]).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &Value) -> Vec<String> {
        v["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| {
                s["names"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n.as_str().unwrap().to_owned())
            })
            .collect()
    }

    #[test]
    fn default_profile_resolves_by_capability() {
        let plain = default_for(&["CAP_CHOWN".to_owned()]);
        assert_eq!(plain["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(plain["defaultErrnoRet"], 1);
        let n = names(&plain);
        assert!(n.contains(&"read".to_owned()));
        // unshare, mount and friends need CAP_SYS_ADMIN.
        assert!(!n.contains(&"unshare".to_owned()));
        assert!(!n.contains(&"mount".to_owned()));
        assert!(!n.contains(&"reboot".to_owned()));
        let admin = default_for(&["CAP_SYS_ADMIN".to_owned(), "CAP_SYS_BOOT".to_owned()]);
        let n = names(&admin);
        assert!(n.contains(&"unshare".to_owned()));
        assert!(n.contains(&"reboot".to_owned()));
        if std::env::consts::ARCH == "x86_64" {
            let expected = if x32_abi() {
                json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
            } else {
                json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"])
            };
            assert_eq!(plain["architectures"], expected);
            assert!(names(&plain).contains(&"arch_prctl".to_owned()));
        }
        // The result is valid for libcontainer.
        let oci: oci_spec::runtime::LinuxSeccomp = serde_json::from_value((*plain).clone()).unwrap();
        assert!(oci.syscalls().as_ref().unwrap().len() > 10);
        // clone without namespace flags: mask in valueTwo for libcontainer (see oci_arg).
        let clone = plain["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["names"] == json!(["clone"]) && s.get("args").is_some())
            .unwrap();
        assert_eq!(clone["args"][0]["value"], 0);
        assert_eq!(clone["args"][0]["valueTwo"], 2114060288u64);
    }

    #[test]
    fn custom_profiles_and_their_errors() {
        let p = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13},
            {"name":"chmod","action":"SCMP_ACT_ERRNO","includes":{"caps":["CAP_SYS_ADMIN"]}},
            {"names":["keyctl"],"action":"SCMP_ACT_ERRNO","excludes":{"minKernel":"2.6"}}
        ]}"#;
        let v = custom(p, &[]).unwrap().unwrap();
        assert_eq!(names(&v), ["mkdir", "mkdirat"]);
        assert_eq!(v["syscalls"][0]["errnoRet"], 13);
        assert!(custom("{}", &[]).unwrap().is_none(), "an empty profile is no seccomp");
        for (bad, want) in [
            ("{", "Decoding seccomp profile failed"),
            (
                r#"{"defaultAction":"SCMP_ACT_NOPE","syscalls":[]}"#,
                "Decoding seccomp profile failed",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86"],"archMap":[{"architecture":"SCMP_ARCH_X86"}]}"#,
                "both 'architectures' and 'archMap'",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"name":"a","names":["b"],"action":"SCMP_ACT_ERRNO"}]}"#,
                "both 'name' and 'names'",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["a"],"action":"SCMP_ACT_ERRNO","includes":{"minKernel":"4"}}]}"#,
                "invalid kernel version",
            ),
        ] {
            let err = check_seccomp_profile(bad).unwrap_err().to_string();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_version("6.18.44-fc-v782"), Some((6, 18)));
        assert_eq!(kernel_version("3.12-1-amd64"), Some((3, 12)));
        assert_eq!(kernel_version("garbage"), None);
    }
}
