//! `ucm-sim`: being written (issue 5).
fn main() -> anyhow::Result<()> {
    anyhow::bail!("ucm-sim is not written yet")
}
