//! Printing results: aligned tables for people, JSON for scripts.
use crate::api::{Job, Key};
use crate::upload::{FileOutcome, FileState};
use serde::Serialize;

/// Rows as columns padded to their widest cell (the last column is not padded). Pure.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            if i == last {
                out.push_str(&cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                out.push_str(&cell);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = line(header.iter().map(|h| (*h).to_owned()).collect());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.clone()));
        out.push('\n');
    }
    out
}

/// Counts of an upload's outcomes.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Totals {
    pub files: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub interrupted: bool,
}

pub fn totals(outcomes: &[FileOutcome], interrupted: bool) -> Totals {
    let succeeded = outcomes.iter().filter(|o| o.state == FileState::Success).count();
    Totals {
        files: outcomes.len(),
        succeeded,
        failed: outcomes.len() - succeeded,
        interrupted,
    }
}

/// The summary of `upload` for people.
pub fn upload_text(outcomes: &[FileOutcome], totals: &Totals) -> String {
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|o| {
            let result = match (&o.thumbnail, &o.reason, &o.detail) {
                (Some(path), _, _) => path.display().to_string(),
                (None, Some(reason), Some(detail)) => format!("{reason}: {detail}"),
                (None, None, Some(detail)) => detail.clone(),
                _ => String::new(),
            };
            vec![
                o.file.display().to_string(),
                o.state.as_str().to_owned(),
                o.job_id.clone().unwrap_or_else(|| "-".into()),
                result,
            ]
        })
        .collect();
    let mut out = table(&["FILE", "STATE", "JOB", "RESULT"], &rows);
    out.push_str(&format!(
        "{} files: {} succeeded, {} did not{}\n",
        totals.files,
        totals.succeeded,
        totals.failed,
        if totals.interrupted { " (interrupted)" } else { "" }
    ));
    out
}

/// The report of `upload --output json`.
#[derive(Serialize)]
pub struct UploadReport<'a> {
    #[serde(flatten)]
    pub totals: &'a Totals,
    pub results: &'a [FileOutcome],
}

pub fn job_text(job: &Job) -> String {
    let mut rows = vec![
        vec!["job".to_owned(), job.job_id.clone()],
        vec!["status".to_owned(), job.status.clone()],
        vec!["created".to_owned(), job.created_at.clone()],
    ];
    if let Some(at) = &job.finished_at {
        rows.push(vec!["finished".into(), at.clone()]);
    }
    if let Some(owner) = &job.owner {
        rows.push(vec!["owner".into(), owner.clone()]);
    }
    if let Some(e) = &job.error {
        rows.push(vec!["error".into(), format!("{}: {}", e.reason, e.message)]);
    }
    for o in &job.outputs {
        rows.push(vec![
            format!("output {}", o.name),
            format!("{}x{} {} ({} bytes)", o.width, o.height, o.content_type, o.bytes),
        ]);
    }
    if let Some(p) = &job.placeholder {
        rows.push(vec!["thumbhash".into(), p.thumbhash.clone()]);
        rows.push(vec!["blurhash".into(), p.blurhash.clone()]);
    }
    let width = rows.iter().map(|r| r[0].chars().count()).max().unwrap_or(0);
    rows.into_iter()
        .map(|r| format!("{:<width$}  {}\n", r[0], r[1]))
        .collect()
}

pub fn jobs_text(jobs: &[Job]) -> String {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.job_id.clone(),
                j.status.clone(),
                j.created_at.clone(),
                j.error.as_ref().map(|e| e.reason.clone()).unwrap_or_default(),
            ]
        })
        .collect();
    table(&["JOB", "STATUS", "CREATED", "REASON"], &rows)
}

pub fn keys_text(keys: &[Key]) -> String {
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.id.clone(),
                k.owner.clone(),
                k.scopes.join(","),
                k.state.clone(),
                k.name.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(&["ID", "OWNER", "SCOPES", "STATE", "NAME"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_on_the_widest_cell() {
        let text = table(
            &["A", "BB", "C"],
            &[
                vec!["long".into(), "x".into(), "tail".into()],
                vec!["s".into(), "yyy".into(), "".into()],
            ],
        );
        assert_eq!(text, "A     BB   C\nlong  x    tail\ns     yyy\n");
    }
}
