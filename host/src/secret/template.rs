//! `${secret:NAME}` in an HTTP job's header values and body: which secrets a
//! text refers to, and the text with them filled in. Other `${...}` text is
//! left as written.

use std::collections::BTreeMap;

use super::SecretValue;
use crate::ids::SecretName;

const OPEN: &str = "${secret:";

/// Why a text's references could not be read or filled in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("`{OPEN}` at byte {at} has no closing `}}`")]
    Unclosed { at: usize },
    #[error("`{OPEN}{name}}}`: {message}")]
    BadName { name: String, message: String },
    #[error("secret {0} was not given to this run")]
    Missing(String),
    #[error("secret {0} is not UTF-8 text, which a header value must be")]
    NotText(String),
}

/// The pieces of a template: literal text and references, in order.
enum Piece<'t> {
    Text(&'t str),
    Secret(SecretName),
}

fn pieces(text: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut pieces = Vec::new();
    let mut rest = text;
    let mut offset = 0;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len()..];
        let end = after.find('}').ok_or(TemplateError::Unclosed { at: offset + start })?;
        let name = &after[..end];
        let name = SecretName::new(name).map_err(|err| TemplateError::BadName {
            name: name.to_owned(),
            message: err.to_string(),
        })?;
        pieces.push(Piece::Text(&rest[..start]));
        pieces.push(Piece::Secret(name));
        let consumed = start + OPEN.len() + end + 1;
        offset += consumed;
        rest = &rest[consumed..];
    }
    pieces.push(Piece::Text(rest));
    Ok(pieces)
}

/// The secrets `text` refers to, in order of first use.
pub fn references(text: &str) -> Result<Vec<SecretName>, TemplateError> {
    let mut names = Vec::new();
    for piece in pieces(text)? {
        if let Piece::Secret(name) = piece
            && !names.contains(&name)
        {
            names.push(name);
        }
    }
    Ok(names)
}

/// `text` with every reference replaced by its value from `values` (keyed
/// by secret name).
pub fn expand(text: &str, values: &BTreeMap<String, SecretValue>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    for piece in pieces(text)? {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Secret(name) => {
                let value = values
                    .get(name.as_str())
                    .ok_or_else(|| TemplateError::Missing(name.to_string()))?;
                let text = value
                    .as_text()
                    .ok_or_else(|| TemplateError::NotText(name.to_string()))?;
                out.push_str(text);
            }
        }
    }
    Ok(out)
}
