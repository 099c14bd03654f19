//! `$batch` bodies as Dataverse reads and writes them (OData 4.0 §11.7, multipart/mixed):
//! a batch holds parts that are each one request (`application/http`) or a change set (a
//! nested `multipart/mixed` of requests). Lines may end in CRLF or LF.

use super::org::{Refusal, codes};

/// One request inside a batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Operation {
    /// The change set's `Content-ID` of the request, when given.
    pub content_id: Option<String>,
    pub method: String,
    /// As written in the request line: absolute, from the host, or relative to the service.
    pub url: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Operation {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// A top-level part of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Single(Operation),
    ChangeSet(Vec<Operation>),
}

/// The answer to one request.
#[derive(Clone, Debug)]
pub struct Answer {
    pub content_id: Option<String>,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
}

/// The answer to a top-level part: a change set that succeeded answers each request; one
/// that failed answers one error for the whole set.
pub enum PartAnswer {
    Single(Answer),
    ChangeSet(Vec<Answer>),
}

fn malformed(problem: &str) -> Refusal {
    Refusal::new(
        400,
        codes::BAD_PAYLOAD,
        format!("The batch request body is not valid: {problem}"),
    )
}

/// The `boundary` parameter of a `multipart/mixed` content type.
pub fn boundary(content_type: &str) -> Option<String> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/mixed") {
        return None;
    }
    params.split(';').find_map(|param| {
        let (key, value) = param.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_string())
    })
}

/// Reads a batch body delimited by `boundary`.
pub fn parse_batch(body: &str, boundary: &str) -> Result<Vec<Part>, Refusal> {
    split(body, boundary)?
        .into_iter()
        .map(|part| {
            let (headers, content) = head(part);
            let content_type = find(&headers, "content-type").unwrap_or_default();
            if let Some(inner) = self::boundary(content_type) {
                let operations = split(content, &inner)?
                    .into_iter()
                    .map(operation)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Part::ChangeSet(operations))
            } else if content_type.starts_with("application/http") {
                Ok(Part::Single(operation(part)?))
            } else {
                Err(malformed(
                    "a part is neither application/http nor a change set",
                ))
            }
        })
        .collect()
}

/// The parts between `--boundary` lines, up to `--boundary--`.
fn split<'a>(body: &'a str, boundary: &str) -> Result<Vec<&'a str>, Refusal> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut rest = body;
    let mut closed = false;
    // Anything before the first delimiter is a preamble, ignored.
    let Some(start) = rest.find(&delimiter) else {
        return Err(malformed("no part starts with the boundary"));
    };
    rest = &rest[start + delimiter.len()..];
    loop {
        if rest.starts_with("--") {
            closed = true;
            break;
        }
        let Some(end) = rest.find(&delimiter) else {
            break;
        };
        parts.push(rest[..end].trim_start_matches(['\r', '\n']));
        rest = &rest[end + delimiter.len()..];
    }
    if !closed {
        return Err(malformed("the closing boundary is missing"));
    }
    Ok(parts)
}

/// A part's headers (names in lower case) and what follows the blank line after them.
fn head(part: &str) -> (Vec<(String, String)>, &str) {
    let (headers, content) = split_head(part);
    (header_lines(headers.lines()), content)
}

fn header_lines<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<(String, String)> {
    lines
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().to_string()))
        })
        .collect()
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// One `application/http` part: its MIME headers, then the request line, headers and body.
fn operation(part: &str) -> Result<Operation, Refusal> {
    let (mime, request) = head(part);
    let (request_head, body) = split_head(request);
    let mut lines = request_head.lines();
    let request_line = lines
        .next()
        .ok_or_else(|| malformed("a part holds no request"))?;
    let mut words = request_line.split_whitespace();
    let (Some(method), Some(url)) = (words.next(), words.next()) else {
        return Err(malformed("a request line lacks its method or URL"));
    };
    let headers = header_lines(lines);
    Ok(Operation {
        content_id: find(&mime, "content-id").map(str::to_string),
        method: method.to_string(),
        url: url.to_string(),
        headers,
        body: body.trim_end_matches(['\r', '\n']).to_string(),
    })
}

/// What comes before the first blank line, and what follows it.
fn split_head(request: &str) -> (&str, &str) {
    match (request.find("\r\n\r\n"), request.find("\n\n")) {
        (Some(crlf), Some(lf)) if lf < crlf => (&request[..lf], &request[lf + 2..]),
        (Some(crlf), _) => (&request[..crlf], &request[crlf + 4..]),
        (None, Some(lf)) => (&request[..lf], &request[lf + 2..]),
        (None, None) => (request, ""),
    }
}

/// Writes a batch answer; returns its boundary and body (CRLF line ends).
pub fn render(parts: &[PartAnswer]) -> (String, String) {
    let boundary = format!("batchresponse_{}", super::org::new_guid());
    let mut out = String::new();
    for part in parts {
        out.push_str(&format!("--{boundary}\r\n"));
        match part {
            PartAnswer::Single(answer) => write_answer(&mut out, answer),
            PartAnswer::ChangeSet(answers) => {
                let inner = format!("changesetresponse_{}", super::org::new_guid());
                out.push_str(&format!(
                    "Content-Type: multipart/mixed; boundary={inner}\r\n\r\n"
                ));
                for answer in answers {
                    out.push_str(&format!("--{inner}\r\n"));
                    write_answer(&mut out, answer);
                }
                out.push_str(&format!("--{inner}--\r\n"));
            }
        }
    }
    out.push_str(&format!("--{boundary}--\r\n"));
    (boundary, out)
}

fn write_answer(out: &mut String, answer: &Answer) {
    out.push_str("Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n");
    if let Some(id) = &answer.content_id {
        out.push_str(&format!("Content-ID: {id}\r\n"));
    }
    out.push_str(&format!(
        "\r\nHTTP/1.1 {} {}\r\n",
        answer.status,
        reason(answer.status)
    ));
    for (name, value) in &answer.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    if let Some(body) = &answer.body {
        out.push_str(body);
    }
    out.push_str("\r\n");
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        412 => "Precondition Failed",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The change set request of Microsoft's "Execute batch operations" page, LF line ends.
    const DOC_EXAMPLE: &str = "--batch_AAA123\nContent-Type: multipart/mixed; boundary=changeset_BBB456\n\n--changeset_BBB456\nContent-Type: application/http\nContent-Transfer-Encoding:binary\nContent-ID: 1\n\nPOST [Organization URI]/api/data/v9.2/accounts HTTP/1.1\nContent-Type: application/json;type=entry\n\n{\n    \"name\":\"QQQQ\",\n    \"revenue\": 1.50\n}\n\n--changeset_BBB456--\n--batch_AAA123\nContent-Type: application/http\nContent-Transfer-Encoding: binary\n\nGET /api/data/v9.2/accounts?$select=name HTTP/1.1\n\n\n--batch_AAA123--\n";

    #[test]
    fn reads_change_sets_and_single_requests() {
        assert_eq!(
            boundary("multipart/mixed; boundary=\"batch_AAA123\"").as_deref(),
            Some("batch_AAA123")
        );
        let parts = parse_batch(DOC_EXAMPLE, "batch_AAA123").unwrap();
        let [Part::ChangeSet(set), Part::Single(get)] = parts.as_slice() else {
            panic!("{parts:?}");
        };
        assert_eq!(set[0].content_id.as_deref(), Some("1"));
        assert_eq!(set[0].method, "POST");
        assert!(set[0].body.contains("\"QQQQ\""));
        assert_eq!(
            set[0].header("content-type"),
            Some("application/json;type=entry")
        );
        assert_eq!(get.method, "GET");
        assert_eq!(get.url, "/api/data/v9.2/accounts?$select=name");
        assert!(
            parse_batch(
                DOC_EXAMPLE.trim_end_matches("--batch_AAA123--\n"),
                "batch_AAA123"
            )
            .is_err()
        );
    }

    #[test]
    fn answers_read_back_as_a_batch() {
        let ok = Answer {
            content_id: Some("1".into()),
            status: 204,
            headers: vec![("OData-Version".into(), "4.0".into())],
            body: None,
        };
        let (boundary, body) = render(&[PartAnswer::ChangeSet(vec![ok])]);
        assert!(body.starts_with(&format!(
            "--{boundary}\r\nContent-Type: multipart/mixed; boundary=changesetresponse_"
        )));
        assert!(body.contains("Content-ID: 1\r\n\r\nHTTP/1.1 204 No Content\r\n"));
        assert!(body.ends_with(&format!("--{boundary}--\r\n")));
    }
}
