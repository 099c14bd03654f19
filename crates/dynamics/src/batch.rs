//! `$batch` as the adapter writes and reads it: one change set per contact (so that one
//! refusal rolls back only its own contact), and the answer read back as one response per
//! change set, in order.

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use unisync_kit::Answer;

/// One contact's update inside a batch.
pub struct BatchUpdate {
    /// The resource from the host: `/api/data/v9.2/contacts(id)?$select=...`.
    pub path: String,
    /// `If-Match`: `*`, or the row's ETag.
    pub if_match: String,
    /// The JSON body.
    pub body: String,
}

/// A batch request's body: each update in a change set of its own, `Content-ID` its place
/// (from 1), each asking for the row back.
pub fn request_body(boundary: &str, updates: &[BatchUpdate]) -> String {
    let mut text = String::new();
    for (n, update) in updates.iter().enumerate() {
        let change_set = format!("changeset_{boundary}_{n}");
        text.push_str(&format!(
            "--{boundary}\r\nContent-Type: multipart/mixed; boundary={change_set}\r\n\r\n\
             --{change_set}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: {id}\r\n\r\n\
             PATCH {path} HTTP/1.1\r\nContent-Type: application/json\r\nIf-Match: {if_match}\r\nPrefer: return=representation\r\n\r\n\
             {body}\r\n--{change_set}--\r\n",
            id = n + 1,
            path = update.path,
            if_match = update.if_match,
            body = update.body,
        ));
    }
    text.push_str(&format!("--{boundary}--\r\n"));
    text
}

/// The answer of each change set, in order: the change set's response when it succeeded,
/// its single error response when it failed. `Err` when the body is no multipart answer.
pub fn change_set_answers(content_type: &str, body: &str) -> Result<Vec<Answer>, String> {
    let boundary = boundary_of(content_type)
        .ok_or_else(|| format!("the batch answer is not multipart/mixed: `{content_type}`"))?;
    parts(body, &boundary)?
        .into_iter()
        .map(|part| {
            let (mime, content) = cut(part);
            match boundary_of(&header(mime, "content-type").unwrap_or_default()) {
                // A change set that succeeded: its one response (one request each).
                Some(inner) => parts(content, &inner)?
                    .into_iter()
                    .next()
                    .ok_or_else(|| "a change set answer holds no response".to_string())
                    .and_then(|response| http_response(cut(response).1)),
                None => http_response(content),
            }
        })
        .collect()
}

/// The `boundary` of a `multipart/mixed` content type.
fn boundary_of(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    if !params
        .next()?
        .trim()
        .eq_ignore_ascii_case("multipart/mixed")
    {
        return None;
    }
    params.find_map(|param| {
        let (name, value) = param.trim().split_once('=')?;
        name.eq_ignore_ascii_case("boundary")
            .then(|| value.trim_matches('"').to_string())
    })
}

/// The parts between `--boundary` delimiters, up to the closing one.
fn parts<'a>(body: &'a str, boundary: &str) -> Result<Vec<&'a str>, String> {
    let delimiter = format!("--{boundary}");
    let mut pieces = body.split(delimiter.as_str());
    pieces.next(); // the preamble
    let mut found = Vec::new();
    for piece in pieces {
        if piece.starts_with("--") {
            return Ok(found);
        }
        found.push(piece.trim_start_matches(['\r', '\n']));
    }
    Err("the multipart answer is cut off (no closing boundary)".to_string())
}

/// Headers and content of a part or message, cut at the first empty line.
fn cut(text: &str) -> (&str, &str) {
    let crlf = text.find("\r\n\r\n").map(|at| (at, 4));
    let lf = text.find("\n\n").map(|at| (at, 2));
    match [crlf, lf].into_iter().flatten().min() {
        Some((at, len)) => (&text[..at], &text[at + len..]),
        None => (text, ""),
    }
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_string())
    })
}

/// An embedded HTTP response (`HTTP/1.1 204 No Content`, headers, body).
fn http_response(message: &str) -> Result<Answer, String> {
    let (head, body) = cut(message);
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| "a batch response has no status line".to_string())?;
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.trim().as_bytes()),
                HeaderValue::from_str(value.trim()),
            )
        {
            headers.append(name, value);
        }
    }
    Ok(Answer {
        status,
        headers,
        body: body.trim_end_matches(['\r', '\n']).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of Microsoft's documented answer to a batch with change sets and
    /// `odata.continue-on-error`: a failed change set answers one error part.
    const ANSWER: &str = "--batchresponse_1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\nHTTP/1.1 400 Bad Request\r\nContent-Type: application/json; odata.metadata=minimal\r\nOData-Version: 4.0\r\n\r\n{\"error\":{\"code\":\"0x80044331\",\"message\":\"too long\"}}\r\n--batchresponse_1\r\nContent-Type: multipart/mixed; boundary=changesetresponse_2\r\n\r\n--changesetresponse_2\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: 2\r\n\r\nHTTP/1.1 200 OK\r\nETag: W/\"7\"\r\n\r\n{\"contactid\":\"x\"}\r\n--changesetresponse_2--\r\n--batchresponse_1--\r\n";

    #[test]
    fn reads_one_answer_per_change_set() {
        let answers =
            change_set_answers("multipart/mixed; boundary=batchresponse_1", ANSWER).unwrap();
        assert_eq!(answers.len(), 2);
        assert_eq!(answers[0].status, StatusCode::BAD_REQUEST);
        assert!(answers[0].body.contains("0x80044331"));
        assert_eq!(answers[1].status, StatusCode::OK);
        assert_eq!(answers[1].headers["etag"], "W/\"7\"");
        assert_eq!(answers[1].body, "{\"contactid\":\"x\"}");
        assert!(change_set_answers("application/json", ANSWER).is_err());
        let cut_off = &ANSWER[..ANSWER.len() - 25];
        assert!(change_set_answers("multipart/mixed; boundary=batchresponse_1", cut_off).is_err());
    }

    #[test]
    fn each_update_is_a_change_set_of_its_own() {
        let update = |n: u8| BatchUpdate {
            path: format!("/api/data/v9.2/contacts({n})"),
            if_match: "*".into(),
            body: "{}".into(),
        };
        let text = request_body("batch_b", &[update(1), update(2)]);
        assert_eq!(
            text.matches("Content-Type: multipart/mixed; boundary=changeset_")
                .count(),
            2
        );
        assert!(
            text.contains("Content-ID: 2\r\n\r\nPATCH /api/data/v9.2/contacts(2) HTTP/1.1\r\n")
        );
        assert!(text.ends_with("--batch_b--\r\n"));
    }
}
