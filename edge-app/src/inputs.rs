//! Input files: images versus videos, and directory expansion.

use std::path::Path;

/// Extensions decoded as still images.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png"];
/// Extensions taken from a directory as videos.
pub const VIDEO_EXTENSIONS: &[&str] = &[
    "mp4", "mov", "mkv", "avi", "webm", "m4v", "mpg", "mpeg", "ts", "flv", "wmv",
];

fn has_ext(path: &str, list: &[&str]) -> bool {
    Path::new(path)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| list.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Whether `path` names a still image (by extension).
pub fn is_image(path: &str) -> bool {
    has_ext(path, IMAGE_EXTENSIONS)
}

/// Whether `path` names a video by its extension.
pub fn is_video(path: &str) -> bool {
    has_ext(path, VIDEO_EXTENSIONS)
}

/// Command-line inputs with directories expanded into their images and videos
/// (sorted by name, not recursive; the path is the directory as given joined
/// with the file name). A directory that cannot be listed is an `Err` item.
pub fn expand_inputs(inputs: &[String]) -> Vec<Result<String, (String, anyhow::Error)>> {
    let mut out = Vec::new();
    for input in inputs {
        let p = Path::new(input);
        if !p.is_dir() {
            out.push(Ok(input.clone()));
            continue;
        }
        match std::fs::read_dir(p) {
            Ok(entries) => {
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .filter(|n| !n.starts_with('.') && (is_image(n) || is_video(n)))
                    .collect();
                names.sort();
                out.extend(
                    names
                        .into_iter()
                        .map(|n| Ok(p.join(n).to_string_lossy().into_owned())),
                );
            }
            Err(e) => out.push(Err((
                input.clone(),
                anyhow::Error::new(e).context("cannot list directory"),
            ))),
        }
    }
    out
}
