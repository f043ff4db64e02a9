//! One rule of an OCI `linux.seccomp` profile, as the JSON strata-linux reads; both of the
//! sandbox's filters are lists of these.

use serde_json::Value;

/// One seccomp rule for `names`, with `errno` for SCMP_ACT_ERRNO and `args` conditions
/// (index, op, value, valueTwo) that must all hold.
pub(super) fn rule(
    names: &[&str],
    action: &str,
    errno: Option<u32>,
    args: &[(u32, &str, u64, u64)],
) -> Value {
    let mut r = serde_json::json!({"names": names, "action": action});
    if let Some(e) = errno {
        r["errnoRet"] = e.into();
    }
    if !args.is_empty() {
        r["args"] = args
            .iter()
            .map(|(index, op, value, two)| {
                serde_json::json!({"index": index, "op": op, "value": value, "valueTwo": two})
            })
            .collect();
    }
    r
}
