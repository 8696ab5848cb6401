//! `edgeway-control`: being written (issue 5).
fn main() -> anyhow::Result<()> {
    anyhow::bail!("edgeway-control is not written yet")
}
