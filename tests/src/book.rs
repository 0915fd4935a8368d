//! Checks and generators for the book: includes that resolve, the diff
//! between consecutive steps, generated from the step folders, and the
//! pictures, drawn as text and rendered to SVG.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use similar::TextDiff;

use crate::steps::Step;
use crate::workspace;

pub fn src() -> PathBuf {
    workspace().join("book").join("src")
}

/// Every file below `dir` whose name ends in `suffix`, sorted.
pub fn files_below(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.to_string_lossy().ends_with(suffix) {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Every `{{#include FILE}}` and `{{#include FILE:ANCHOR}}` in the book must
/// name a file that exists and an anchor that it holds. mdBook itself only
/// warns, and renders the page without the code.
pub fn check_includes() -> Result<()> {
    let mut problems = Vec::new();
    for page in files_below(&src(), ".md")? {
        let text = fs::read_to_string(&page)?;
        for include in text.split("{{#include ").skip(1) {
            let Some(end) = include.find("}}") else {
                problems.push(format!("{}: unclosed {{{{#include", page.display()));
                continue;
            };
            let spec = include[..end].trim();
            let (file, anchor) = spec
                .split_once(':')
                .map_or((spec, None), |(f, a)| (f, Some(a)));
            let path = page.parent().expect("page in a folder").join(file);
            let Ok(source) = fs::read_to_string(&path) else {
                problems.push(format!(
                    "{}: included file {file} does not exist",
                    page.display()
                ));
                continue;
            };
            let Some(anchor) = anchor.filter(|a| !a.starts_with(|c: char| c.is_ascii_digit()))
            else {
                continue;
            };
            let has = |marker: &str| source.lines().any(|line| line.trim_end().ends_with(marker));
            if !has(&format!("ANCHOR: {anchor}")) || !has(&format!("ANCHOR_END: {anchor}")) {
                problems.push(format!("{}: {file} has no anchor {anchor}", page.display()));
            }
        }
    }
    if !problems.is_empty() {
        bail!("broken includes:\n{}", problems.join("\n"));
    }
    Ok(())
}

/// Where the book keeps the diff that leads to `step`.
pub fn diff_path(step: &Step) -> PathBuf {
    src().join("diffs").join(format!("{}.diff", step.folder))
}

/// The book's diff for `after` must be what the step folders give now.
pub fn check_diff(before: &Step, after: &Step) -> Result<()> {
    is_fresh(&diff_path(after), &step_diff(before, after)?)
}

/// A generated file of the book must hold what its sources give now.
fn is_fresh(path: &Path, fresh: &str) -> Result<()> {
    match fs::read_to_string(path) {
        Ok(text) if text == fresh => Ok(()),
        Ok(_) => bail!(
            "{} is stale: regenerate it with `just bless`",
            path.display()
        ),
        Err(error) => bail!("{}: {error}: generate it with `just bless`", path.display()),
    }
}

/// The unified diff from one step's sources to the next step's: Cargo.toml
/// and everything under src/.
pub fn step_diff(before: &Step, after: &Step) -> Result<String> {
    let root = workspace().join("steps");
    let mut files = sources(&root.join(&before.folder))?;
    files.extend(sources(&root.join(&after.folder))?);
    files.sort();
    files.dedup();
    let mut diff = String::new();
    for file in files {
        let read = |step: &Step| fs::read_to_string(root.join(&step.folder).join(&file)).ok();
        let (old, new) = (read(before), read(after));
        let name = |step: &Step, text: &Option<String>| match text {
            Some(_) => format!("{}/{file}", step.folder),
            None => "/dev/null".to_owned(),
        };
        let (old_name, new_name) = (name(before, &old), name(after, &new));
        let (old, new) = (old.unwrap_or_default(), new.unwrap_or_default());
        if old != new {
            let text = TextDiff::from_lines(&old, &new);
            diff.push_str(
                &text
                    .unified_diff()
                    .context_radius(3)
                    .header(&old_name, &new_name)
                    .to_string(),
            );
        }
    }
    Ok(diff)
}

fn sources(step_dir: &Path) -> Result<Vec<String>> {
    let mut files = vec!["Cargo.toml".to_owned()];
    for path in files_below(&step_dir.join("src"), "")? {
        let relative = path.strip_prefix(step_dir).expect("below the step");
        files.push(relative.to_string_lossy().into_owned());
    }
    Ok(files)
}

/// Where the book keeps its pictures: each drawn as text in `NAME.bob` and
/// rendered by svgbob to `NAME.svg` beside it, which the chapters show. A
/// picture as wide as a page would not fit in a code block; an image scales.
pub fn diagrams_dir() -> PathBuf {
    src().join("diagrams")
}

/// Every picture's text source, sorted.
pub fn diagram_sources() -> Result<Vec<PathBuf>> {
    if !diagrams_dir().exists() {
        return Ok(Vec::new());
    }
    files_below(&diagrams_dir(), ".bob")
}

/// The SVG that the book shows for the picture drawn in `source`.
pub fn svg_path(source: &Path) -> PathBuf {
    source.with_extension("svg")
}

/// The SVG that svgbob renders from `source`. Text between double quotes
/// is drawn as it is, never as lines.
pub fn render_diagram(source: &Path) -> Result<String> {
    let text = fs::read_to_string(source).with_context(|| format!("read {}", source.display()))?;
    let settings = svgbob::Settings {
        // A cell is 8 px wide; at 13 px, a monospace font's letters are
        // narrower than that, so text never runs into the lines after it.
        font_size: 13,
        ..svgbob::Settings::default()
    };
    // svgbob sizes the picture by its lines alone, and would cut off quoted
    // text that reaches further: size it by every character instead.
    let columns = text.lines().map(|line| line.chars().count()).max();
    let rows = text.lines().count();
    let width = settings.scale * (columns.unwrap_or(0) + 1) as f32;
    let height = settings.scale * 2.0 * (rows + 1) as f32;
    let mut svg = svgbob::to_svg_with_override_size(&text, &settings, width, height);
    if !svg.ends_with('\n') {
        svg.push('\n');
    }
    Ok(svg)
}

/// The book's SVG for `source` must be what its text renders to now.
pub fn check_diagram(source: &Path) -> Result<()> {
    is_fresh(&svg_path(source), &render_diagram(source)?)
}

/// Renders every picture whose SVG is missing or stale.
pub fn write_diagrams() -> Result<()> {
    for source in diagram_sources()? {
        let path = svg_path(&source);
        let fresh = render_diagram(&source)?;
        if fs::read_to_string(&path).ok().as_deref() != Some(fresh.as_str()) {
            fs::write(&path, fresh).with_context(|| format!("write {}", path.display()))?;
        }
    }
    Ok(())
}

/// The ids mdBook gives a page's headings, for links to `page.md#id`: the
/// heading's text, lower-cased, spaces as `-`, other punctuation dropped
/// (mdBook's `normalize_id`), or the `{#id}` it names.
pub fn heading_ids(page: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut in_code = false;
    for line in page.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        }
        let Some(heading) = line.strip_prefix('#').filter(|_| !in_code) else {
            continue;
        };
        let heading = heading.trim_start_matches('#').trim();
        if let Some((_, id)) = heading.strip_suffix('}').and_then(|h| h.rsplit_once("{#")) {
            ids.push(id.to_owned());
            continue;
        }
        ids.push(
            heading
                .chars()
                .filter_map(|c| match c {
                    c if c.is_alphanumeric() || c == '_' || c == '-' => {
                        Some(c.to_ascii_lowercase())
                    }
                    c if c.is_whitespace() => Some('-'),
                    _ => None,
                })
                .collect(),
        );
    }
    ids
}
