//! The generic `labels.csv` dataset layout (as `../shared/data/dfdc-faces` uses):
//! a header line naming at least `file` and `label`; optional `group`,
//! `identity`, `source_video` and `split` columns.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// One labelled face crop or video.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Path relative to the dataset directory.
    pub file: String,
    /// `real` or `fake`.
    pub label: String,
    /// Source video group (a fake and its real original share one).
    pub group: String,
    /// Identity of the person.
    pub identity: String,
    /// `train`, `val` or `test`.
    pub split: String,
}

/// Reads `dir/labels.csv`. Simple CSV: no quoted commas (the layout has none).
pub fn read_labels(dir: &Path) -> Result<Vec<Row>> {
    let path = dir.join("labels.csv");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse_labels(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Parses the text of a labels.csv.
pub fn parse_labels(text: &str) -> Result<Vec<Row>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .context("empty labels file")?
        .split(',')
        .map(str::trim)
        .collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (Some(fi), Some(li)) = (col("file"), col("label")) else {
        bail!("header must name `file` and `label` columns, got {header:?}");
    };
    let (gi, ii, si, vi) = (
        col("group"),
        col("identity"),
        col("split"),
        col("source_video"),
    );
    let mut rows = Vec::new();
    for (n, line) in lines.enumerate() {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() != header.len() {
            bail!(
                "line {}: {} fields, header has {}",
                n + 2,
                f.len(),
                header.len()
            );
        }
        let get = |i: Option<usize>| i.map(|i| f[i].to_string()).unwrap_or_default();
        let label = f[li].to_string();
        if label != "real" && label != "fake" {
            bail!("line {}: label {label:?} is neither real nor fake", n + 2);
        }
        let group = gi
            .or(vi)
            .map(|i| f[i].to_string())
            .unwrap_or_else(|| f[fi].to_string());
        rows.push(Row {
            file: f[fi].to_string(),
            label,
            group,
            identity: get(ii),
            split: get(si),
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_shared_layout() {
        let t = "file,label,source_video,group,identity,split\nfaces/a.jpg,real,a.mp4,a,id1,train\nfaces/b.jpg,fake,b.mp4,a,id1,test\n";
        let rows = parse_labels(t).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].group, "a");
        assert_eq!(rows[1].split, "test");
        assert_eq!(rows[1].label, "fake");
    }

    #[test]
    fn rejects_bad_rows() {
        assert!(parse_labels("").is_err());
        assert!(parse_labels("file,split\na,train\n").is_err());
        assert!(parse_labels("file,label\na.jpg,maybe\n").is_err());
        assert!(parse_labels("file,label\na.jpg\n").is_err());
    }
}
